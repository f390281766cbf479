"""Hyperparameter sweeps of the branch: Ray Tune with ASHA over the train stage's own driver and loop.

``python -m madapter tune`` (:func:`madapter.tune.sweep.tune_sweep`) samples ``tune.trials``
configurations of ``tune.space``; every trial is an ordinary train run
(:func:`madapter.train.driver.train`, so the same :func:`~madapter.train.loop.train_loop_per_worker`)
whose epoch reports reach Tune through ``TuneReportCallback``, so ASHA can stop the weak ones
early.  It is not a pipeline stage: a sweep explores, and its product is a preset file that a
tracked ``dvc exp run`` then trains.

* :mod:`~madapter.tune.space`: ``tune.space`` -> Tune's ``param_space``; a trial's config is its overrides.
* :mod:`~madapter.tune.trial`: one trial: its params (own outputs, one worker, ``max_epochs``) and the
  Tune function trainable that calls ``train``.
* :mod:`~madapter.tune.state`: the sweep directory's record (parent run id, what was asked) for resuming.
* :mod:`~madapter.tune.runs`: the MLflow parent run and the bookkeeping of its child (trial) runs.
* :mod:`~madapter.tune.stopping`: ASHA's stop aborts the trial's Ray Train run (so its CPUs come back).
* :mod:`~madapter.tune.preset`: the best configuration as a preset YAML.
* :mod:`~madapter.tune.sweep`: the wiring: Tuner (new or restored), ASHA, results.

Nothing is imported here, so naming the package costs no Ray import.
"""
