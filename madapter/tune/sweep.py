"""``python -m madapter tune``: sample ``tune.trials`` configurations, let ASHA stop the weak ones early,
write the best one as a preset.

The wiring only: the space is :mod:`.space`, a trial :mod:`.trial`, the MLflow side :mod:`.runs`,
the preset :mod:`.preset`, resuming :mod:`.state`.  Each trial is a Tune *function trainable*
that drives one Ray Train run (the train stage's driver and worker loop, one worker) and passes
its epoch reports to Tune (``TuneReportCallback``).  The trial actor itself only waits on its
Train run, so it asks for no CPU (``tune.with_resources``) and ``max_concurrent_trials`` bounds
how many Train runs compete for the cluster (by default as many as fit).

A sweep resumes: started again under the same ``tune.name`` it restores Tune's state from
``<tune.storage_path>/<tune.name>`` (``Tuner.restore``: unfinished and failed trials run again,
finished ones are not touched), each restarted trial's train run continues from its last epoch
checkpoint, and everything keeps logging into the same MLflow parent run (:mod:`.state`).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from madapter.config import ConfigError, Params, apply_override, params_from_dict
from madapter.errors import StageError, first_line
from madapter.tune.runs import TrialOutcome

logger = logging.getLogger(__name__)

MODES = {"val_acc": "max", "train_loss": "min"}
"""Which way each reportable metric is better."""
DRIVER_RESOURCES = {"cpu": 0, "memory": 256 * 2**20}
"""What a trial actor asks for: no CPU (it only waits on its Ray Train run, whose worker does the work;
on 2 CPUs a 1-CPU driver per trial would leave its own worker no CPU), and, because Tune refuses an
empty request, the memory its Python process really holds."""


@dataclass
class SweepResult:
    """What a sweep invocation ended with (the CLI prints it)."""

    name: str
    sweep_dir: Path
    parent_run_id: str
    tracking_uri: str
    completed: bool
    """Every trial ended (completed, stopped by ASHA or failed); ``False``: interrupted, run again to resume."""
    trials: list[TrialOutcome] = field(default_factory=list)
    best: TrialOutcome | None = None
    best_run_id: str | None = None
    preset: Path | None = None

    def count(self, outcome: str) -> int:
        return sum(t.outcome == outcome for t in self.trials)


def tune_sweep(params: Params) -> SweepResult:
    """Run (or resume) the sweep ``params.tune`` describes; see the module docstring."""
    from madapter.ray_runtime import start_ray
    from madapter.tracking import get_client
    from madapter.tune import runs
    from madapter.tune.space import check_space, describe_space
    from madapter.tune.state import SweepState, check_resumable, read_state, spec_digest, write_state
    from madapter.tune.stopping import start_registry
    from madapter.tune.trial import SweepContext

    check_space(params)
    base = pinned_base(params)
    sweep_dir = Path(params.tune.storage_path).resolve() / params.tune.name
    client = get_client(base)
    state = read_state(sweep_dir)
    if state is not None:
        check_resumable(state, params, client.tracking_uri, sweep_dir)
        _check_parent_exists(client, state.parent_run_id, sweep_dir)
    parent = runs.open_parent(client, base, sweep_dir, state.parent_run_id if state else None)
    try:
        start_ray(base, cpus_needed=base.train.cpus_per_worker)
        concurrency = concurrent_trials(base)
        if state is None:
            runs.log_setup(client, parent, base, describe_space(base.tune.space), concurrency)
            write_state(sweep_dir, SweepState(base.tune.name, parent, client.tracking_uri, spec_digest(params)))
        ctx = SweepContext(base.tune.name, str(sweep_dir), parent, os.getcwd())
        registry = start_registry(base.tune.name)  # noqa: F841 - alive while the trials run
        grid = _tuner(base, ctx, sweep_dir, concurrency).fit()
        return _finish(base, client, ctx, grid)
    except KeyboardInterrupt:
        runs.end_parent(client, parent, "KILLED", "interrupted by the user; run the sweep again to resume")
        raise
    except Exception as err:
        runs.end_parent(client, parent, "FAILED", f"failed: {first_line(err)}")
        raise


def pinned_base(params: Params) -> Params:
    """``params`` as every trial starts from them: the MLflow tracking URI resolved NOW (before a
    trial moves ``base.outputs_dir``, which the default local store hangs off), so the parent and
    every trial log to one store, and ``base.data_dir`` absolute."""
    from madapter.tracking import resolve_tracking_uri

    data = params.model_dump(mode="json")
    apply_override(data, "mlflow.tracking_uri", resolve_tracking_uri(params))
    apply_override(data, "base.data_dir", str(Path(params.base.data_dir).resolve()))
    return params_from_dict(data, "tune")


def concurrent_trials(params: Params) -> int:
    """``tune.max_concurrent_trials``, else as many one-worker Train runs as the Ray cluster fits
    (trial actors take no CPU, so without a limit every trial would start and most would wait)."""
    import ray

    if params.tune.max_concurrent_trials is not None:
        return params.tune.max_concurrent_trials
    have = ray.cluster_resources()
    if params.train.use_gpu:
        fits = int(have.get("GPU", 0))
    else:
        fits = math.floor(have.get("CPU", 1) / params.train.cpus_per_worker)
    return max(1, min(fits, params.tune.trials))


def trial_dirname(trial) -> str:
    """Tune's directory (and display name) of a trial: its id, which names its train run too."""
    return trial.trial_id


def _tuner(base: Params, ctx, sweep_dir: Path, concurrency: int):
    """A new ``Tuner``, or the one stored in ``sweep_dir`` restored (unfinished and errored trials resume)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from madapter.tune.space import param_space
    from madapter.tune.stopping import AbortStoppedTrials
    from madapter.tune.trial import run_trial

    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base=base.model_dump(mode="json"), ctx=ctx), DRIVER_RESOURCES
    )
    if tune.Tuner.can_restore(str(sweep_dir)):
        logger.info("resuming sweep %s from %s", ctx.name, sweep_dir)
        return tune.Tuner.restore(str(sweep_dir), trainable=trainable, resume_unfinished=True, resume_errored=True)
    cfg = base.tune
    scheduler = ASHAScheduler(time_attr="epoch", max_t=cfg.max_epochs, grace_period=cfg.grace_period,
                              reduction_factor=cfg.reduction_factor, stop_last_trials=False)
    tune_config = tune.TuneConfig(
        metric=cfg.metric, mode=MODES[cfg.metric], scheduler=scheduler, num_samples=cfg.trials,
        # the concurrency limit goes to the search algorithm: Tune ignores max_concurrent_trials next to one
        search_alg=BasicVariantGenerator(random_state=base.base.seed, max_concurrent=concurrency),
        trial_dirname_creator=trial_dirname, trial_name_creator=trial_dirname,
    )
    run_config = tune.RunConfig(name=cfg.name, storage_path=str(sweep_dir.parent), verbose=1,
                                callbacks=[AbortStoppedTrials(cfg.name, cfg.max_epochs)])
    return tune.Tuner(trainable, param_space=param_space(cfg.space), tune_config=tune_config, run_config=run_config)


def outcome_of(result, status: str, metric: str, max_epochs: int, searched: list[str]) -> TrialOutcome:
    """A Tune ``Result`` and the trial's saved ``status`` as a :class:`TrialOutcome`.

    The status is the one in Tune's saved experiment state (:func:`saved_statuses`): a trial ended
    (``TERMINATED``) with fewer than ``max_epochs`` epochs was stopped by ASHA; one still ``RUNNING``
    or ``PENDING`` there was interrupted and resumes with the next invocation.
    """
    from madapter.tune.space import plain

    metrics: dict[str, Any] = dict(result.metrics or {})
    epochs = int(metrics.get("epoch") or 0)
    config = {key: plain(result.config[key]) for key in searched if key in (result.config or {})}
    value = metrics.get(metric)
    value = float(value) if isinstance(value, int | float) and math.isfinite(value) else None
    if result.error is not None or status == "ERROR":
        outcome = "error"
    elif status != "TERMINATED":
        outcome = "unfinished"
    else:
        outcome = "completed" if epochs >= max_epochs else "stopped_early"
    error = first_line(result.error, 300) if result.error is not None else None
    return TrialOutcome(Path(result.path).name, outcome, epochs, value, config, error)


def saved_statuses(sweep_dir: Path) -> dict[str, str]:
    """Trial id -> status in Tune's saved experiment state.  Not the in-memory trials: when a sweep is
    interrupted Tune saves its state, then stops the running trials, which marks them TERMINATED."""
    from ray.tune import ExperimentAnalysis

    return {trial.trial_id: trial.status for trial in ExperimentAnalysis(str(sweep_dir)).trials}


def _finish(base: Params, client, ctx, grid) -> SweepResult:
    """Close the trials' runs, pick the best trial, write its preset, close the parent run."""
    from madapter.tune import runs
    from madapter.tune.space import describe_space

    cfg = base.tune
    searched = list(describe_space(cfg.space))
    statuses = saved_statuses(Path(ctx.sweep_dir))
    trials = [outcome_of(result, statuses.get(Path(result.path).name, "PENDING"), cfg.metric, cfg.max_epochs, searched)
              for result in grid]
    current = runs.close_children(client, ctx.parent_run_id, ctx.name, trials)
    runs.log_counts(client, ctx.parent_run_id, trials)
    done = len(trials) >= cfg.trials and all(t.outcome != "unfinished" for t in trials)
    sweep = SweepResult(cfg.name, Path(ctx.sweep_dir), ctx.parent_run_id, client.tracking_uri, done, trials)
    if not done:
        runs.end_parent(client, ctx.parent_run_id, "KILLED",
                        f"interrupted after {len(trials) - sweep.count('unfinished')}/{cfg.trials} trials; "
                        f"run the sweep again to resume")
        return sweep
    best = best_trial(trials, cfg.metric)
    if best is None:
        runs.end_parent(client, ctx.parent_run_id, "FAILED", f"failed: no trial reported {cfg.metric}")
        raise StageError(f"{ctx.sweep_dir}: no trial of sweep '{cfg.name}' reported {cfg.metric} "
                         f"({sweep.count('error')} failed; the Ray log above has their errors)")
    sweep.best, sweep.best_run_id = best, current.get(best.trial_id)
    sweep.preset = _write_best(base, ctx, best, sweep.best_run_id)
    runs.log_best(client, ctx.parent_run_id, cfg.metric, best, sweep.best_run_id, sweep.preset)
    runs.end_parent(client, ctx.parent_run_id, "FINISHED",
                    f"completed: {cfg.trials} trials ({sweep.count('stopped_early')} stopped early by ASHA, "
                    f"{sweep.count('error')} failed); best {best.trial_id}")
    return sweep


def best_trial(trials: list[TrialOutcome], metric: str) -> TrialOutcome | None:
    """The trial whose LAST reported ``metric`` is best: a completed trial's is its final model's,
    which is what a run with the preset trains (ASHA only stops trials that were behind)."""
    scored = [t for t in trials if t.metric is not None and t.outcome != "error"]
    if not scored:
        return None
    sign = 1 if MODES[metric] == "max" else -1
    return max(scored, key=lambda t: (sign * t.metric, t.epochs))


def _write_best(base: Params, ctx, best: TrialOutcome, run_id: str | None) -> Path:
    from madapter.tune.preset import header, write_preset

    cfg = base.tune
    path = Path(cfg.output) if cfg.output is not None else Path(ctx.sweep_dir) / "best.yaml"
    head = header(base, best.trial_id, best.metric, best.epochs, run_id, ctx.parent_run_id, path)
    return write_preset(path, base, best.config, head)


def _check_parent_exists(client, run_id: str, sweep_dir: Path) -> None:
    try:
        client.get_run(run_id)
    except Exception:  # noqa: BLE001 - any lookup failure means the run is not in this store
        raise ConfigError(f"{sweep_dir}: the sweep's MLflow run {run_id} is not in {client.tracking_uri}; "
                          f"use the same mlflow.tracking_uri, or delete {sweep_dir} to start over") from None
