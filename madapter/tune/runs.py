"""The sweep in MLflow: one parent run, and a child run per trial (the train run the trial creates).

The parent records what was searched (``tune.*`` params, the sampled distributions, the ASHA
settings), and at the end the best trial (tags ``best.<key>``, metric ``best_<metric>``, the
preset as an artifact) and how many trials ASHA stopped.  Each trial's train run is created
with ``mlflow.parentRunId`` by the train driver itself; this module only closes what a trial
could not: ASHA stops a trial by ending its actor, so its run never reaches the train driver's
own "run ended" bookkeeping and would stay RUNNING.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from madapter.config import Params, TuneSection, flatten_keys
from madapter.run_status import COMPLETED_TAG, STOP_REASON_TAG

logger = logging.getLogger(__name__)

PARENT_TAG = "mlflow.parentRunId"
SWEEP_TAG = "madapter.sweep"
TRIAL_TAG = "madapter.trial_id"
OUTCOME_TAG = "madapter.trial_outcome"
"""``completed`` (all ``tune.max_epochs``), ``stopped_early`` (ASHA), ``error``, ``unfinished`` (interrupted),
or ``superseded`` (an earlier run of a trial that restarted before its first checkpoint)."""


@dataclass
class TrialOutcome:
    """One trial as the sweep saw it end."""

    trial_id: str
    outcome: str
    epochs: int
    metric: float | None
    config: dict[str, Any]
    error: str | None = None


def open_parent(client, params: Params, sweep_dir: Path, parent_run_id: str | None) -> str:
    """The sweep's parent run: ``parent_run_id`` again when resuming (set RUNNING), else a new run."""
    from madapter.tracking import ensure_experiment, provenance_tags

    if parent_run_id is not None:
        client.update_run(parent_run_id, status="RUNNING")
        logger.info("resuming sweep %s (MLflow parent run %s)", params.tune.name, parent_run_id)
        return parent_run_id
    experiment_id = ensure_experiment(client, params)
    tags = {SWEEP_TAG: params.tune.name, "madapter.kind": "sweep", "tune.scheduler": "ASHA",
            "tune.sweep_dir": str(sweep_dir), **provenance_tags(params)}
    run = client.create_run(experiment_id, run_name=params.tune.name, tags=tags)
    logger.info("new sweep %s (MLflow parent run %s)", params.tune.name, run.info.run_id)
    return run.info.run_id


def log_setup(client, run_id: str, params: Params, space: dict[str, str], concurrency: int) -> None:
    """What the sweep searches and how ASHA prunes: params (the same values on every resume), the
    concurrency of this invocation (a tag: it may differ between resumes), the base params."""
    from madapter.tracking import log_dict_artifact, log_params_batched

    tune = {f"tune.{k}": json.dumps(v) if isinstance(v, list | dict) else str(v)
            for k, v in flatten_keys(params.tune.model_dump(mode="json"), TuneSection).items()
            if k not in ("storage_path", "output", "max_concurrent_trials")}
    searched = {f"search.{key}": text for key, text in space.items()}
    log_params_batched(client, run_id, {**tune, **searched, "tune.scheduler": "ASHA", "tune.time_attr": "epoch"})
    client.set_tag(run_id, "tune.max_concurrent_trials", str(concurrency))
    log_dict_artifact(client, run_id, params.model_dump(mode="json"), "config/base_params.yaml")


def child_runs(client, parent_run_id: str) -> dict[str, list]:
    """The parent's child runs by run name, each list oldest first."""
    runs = client.search_runs(
        [client.get_run(parent_run_id).info.experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'",
        max_results=10000,
    )
    found: dict[str, list] = {}
    for run in sorted(runs, key=lambda r: r.info.start_time):
        found.setdefault(run.data.tags.get("mlflow.runName", ""), []).append(run)
    return found


def close_children(client, parent_run_id: str, sweep: str, outcomes: list[TrialOutcome]) -> dict[str, str]:
    """Tag every trial's run with the sweep, trial and outcome; end the runs a trial left RUNNING.

    A trial restarted before its first checkpoint started a new train run: the older ones are
    ended as superseded.  Returns ``{trial id: run id}`` of the current run of each trial.
    """
    from madapter.tune.trial import trial_run_name

    by_name, current = child_runs(client, parent_run_id), {}
    for trial in outcomes:
        runs = by_name.get(trial_run_name(sweep, trial.trial_id), [])
        if not runs:
            continue
        *older, run = runs
        current[trial.trial_id] = run.info.run_id
        for stale in older:
            client.set_tag(stale.info.run_id, OUTCOME_TAG, "superseded")
            _end(client, stale, "KILLED", f"superseded by run {run.info.run_id} (the trial restarted before its "
                                          f"first checkpoint)", force=True)
        for key, value in {SWEEP_TAG: sweep, TRIAL_TAG: trial.trial_id, OUTCOME_TAG: trial.outcome}.items():
            client.set_tag(run.info.run_id, key, value)
        _close_trial_run(client, run, trial)
    return current


def _close_trial_run(client, run, trial: TrialOutcome) -> None:
    if trial.outcome == "stopped_early":
        # the sweep aborted its Train run, which the train driver recorded as a failure: it was not one
        _end(client, run, "KILLED", f"tune: ASHA stopped the trial after epoch {trial.epochs} (below its rung's "
                                    f"cutoff); its configuration was not promising", force=True)
    elif trial.outcome == "error":
        _end(client, run, "FAILED", f"failed: {trial.error or 'the trial failed'}")
    elif trial.outcome == "unfinished":
        _end(client, run, "KILLED", "interrupted; run the sweep again to resume the trial from its checkpoint")


def _end(client, run, status: str, reason: str, force: bool = False) -> None:
    """End a run the train driver left RUNNING (``force``: also one it ended itself, unless FINISHED).
    A run already ended so is left alone: a resumed sweep changes nothing about trials it did not run."""
    if run.info.status == status and run.data.tags.get(STOP_REASON_TAG) == reason[:500]:
        return
    if run.info.status == "RUNNING" or (force and run.info.status != "FINISHED"):
        client.set_tag(run.info.run_id, COMPLETED_TAG, "false")
        client.set_tag(run.info.run_id, STOP_REASON_TAG, reason[:500])
        client.set_terminated(run.info.run_id, status=status)


def log_best(client, run_id: str, metric: str, best: TrialOutcome, best_run_id: str | None, preset: Path) -> None:
    """The best trial on the parent: its config as ``best.<key>`` tags, its metric, its run, the preset."""
    from madapter.tracking import log_metrics

    for key, value in best.config.items():
        client.set_tag(run_id, f"best.{key}", json.dumps(value) if isinstance(value, list) else str(value))
    client.set_tag(run_id, "best.trial_id", best.trial_id)
    client.set_tag(run_id, "best.epoch", str(best.epochs))
    if best_run_id:
        client.set_tag(run_id, "best.run_id", best_run_id)
    if best.metric is not None:
        log_metrics(client, run_id, {f"best_{metric}": best.metric})
    client.log_artifact(run_id, str(preset), "tune")


def log_counts(client, run_id: str, outcomes: list[TrialOutcome]) -> None:
    """How the trials ended, as metrics (``trials_completed``, ``trials_stopped_early``, ...)."""
    from madapter.tracking import log_metrics

    kinds = ("completed", "stopped_early", "error", "unfinished")
    log_metrics(client, run_id, {f"trials_{k}": sum(t.outcome == k for t in outcomes) for k in kinds})


def end_parent(client, run_id: str, status: str, reason: str) -> None:
    """The parent's final status and why (FINISHED: every trial ended; KILLED: interrupted; FAILED)."""
    client.set_tag(run_id, STOP_REASON_TAG, reason[:500])
    client.set_terminated(run_id, status=status)
