"""Training stage: a Ray Train driver and the loop every worker runs, one job per module.

The split follows Made-With-ML: the driver resolves configuration, MLflow and Ray, then hands a
frozen, typed :class:`~madapter.train.worker_config.WorkerConfig` (params, the data it trains on,
the MLflow run) to the worker loop, which is ordinary PyTorch (plus ``ray.train.report``).

* :mod:`~madapter.train.driver`: ``train(params)``, the stage: checks the frame store (or the
  features) and the cluster, opens (or resumes) the MLflow run, runs ``TorchTrainer.fit`` and writes
  ``outputs/train/{checkpoint.pt,run.json,history.json}``.
* :mod:`~madapter.train.identity`: which Ray run (checkpoint directory) a set of params resumes.
* :mod:`~madapter.train.source`: what a worker trains on, switched at one place by
  ``train.source``: the full model on frame-store clips, or the head alone on the cached backbone
  outputs of the ``features`` stage (and the driver's check that those fit ``params.model``).
* :mod:`~madapter.train.loop`: ``train_loop_per_worker``, the wiring: setup, epochs, save;
  DDP wraps only the trainable part of the model.
* :mod:`~madapter.train.step`: one training epoch and one validation pass.
* :mod:`~madapter.train.optim`: AdamW groups, the warm-up + cosine schedule, the grad scaler.
* :mod:`~madapter.train.state`: what an epoch checkpoint holds, writing and restoring it.
* :mod:`~madapter.train.mlflow_log`: what rank 0 logs to MLflow (setup tags, epochs, final plots).
* :mod:`~madapter.train.worker_status`: the per-rank status file operators and tests read.

Nothing is imported here, so naming the package costs no torch or Ray import.
"""
