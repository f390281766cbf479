"""One trial of a sweep: its params, and the Tune function trainable that trains them.

A trial is an ordinary train run (:func:`madapter.train.driver.train`, the stage's own driver
and worker loop) with the trial's sampled values and a few keys pinned by the sweep
(:func:`trial_params`).  Its run name ``<sweep>-<trial id>`` plus train's fingerprint name the
Ray Train run, so a trial Tune restarts (after an interruption) resumes from its last epoch
checkpoint and keeps logging into the same MLflow child run.

:func:`run_trial` runs in a Tune trial actor, which only drives: it gets no CPU
(:func:`madapter.tune.sweep.trainable`), the Ray Train worker it starts does the work.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from madapter.config import Params, apply_override, params_from_dict


@dataclass(frozen=True)
class SweepContext:
    """What every trial of one sweep shares (handed to the trial actors by ``tune.with_parameters``)."""

    name: str
    sweep_dir: str
    """Absolute: ``<tune.storage_path>/<tune.name>``: Tune's experiment, one directory per trial."""
    parent_run_id: str
    """The sweep's MLflow run: every trial's train run is its child."""
    workdir: str
    """Where the sweep was started: trials run there (Tune would start them in their own trial
    directory), so git/DVC provenance tags and any relative path mean what they mean for ``train``."""


def trial_dir(ctx: SweepContext, trial_id: str) -> Path:
    """``<sweep_dir>/<trial id>``: Tune's directory of the trial (its results, :func:`madapter.tune.sweep.
    trial_dirname`) is also its ``base.outputs_dir`` (``train/``) and Ray storage (``ray/``)."""
    return Path(ctx.sweep_dir) / trial_id


def trial_run_name(sweep: str, trial_id: str) -> str:
    """The trial's ``train.run_name`` (its MLflow child run's name): ``<sweep>-<trial id>``."""
    return f"{sweep}-{trial_id}"


def trial_params(base: Params, config: dict[str, Any], ctx: SweepContext, trial_id: str) -> Params:
    """``base`` with the trial's sampled ``config`` (dotted params keys) and the sweep's pins.

    Pinned: its own outputs and Ray storage, ``train.epochs = tune.max_epochs`` (ASHA's ``max_t``),
    one Ray worker (a sweep runs trials side by side instead), and no ``max_epochs_per_run``
    (a budget stop would look like a finished trial to Tune).  ``base`` already carries an
    absolute ``base.data_dir`` and the sweep's resolved ``mlflow.tracking_uri``.
    """
    out = trial_dir(ctx, trial_id)
    pins = {
        "base.outputs_dir": str(out),
        "train.storage_path": str(out / "ray"),
        "train.run_name": trial_run_name(ctx.name, trial_id),
        "train.epochs": base.tune.max_epochs,
        "train.num_workers": 1,
        "train.max_epochs_per_run": None,
    }
    data = base.model_dump(mode="json")
    for key, value in {**pins, **config}.items():
        apply_override(data, key, value, f"tune trial {trial_id}")
    return params_from_dict(data, f"tune trial {trial_id}")


def run_trial(config: dict[str, Any], *, base: dict[str, Any], ctx: SweepContext) -> None:
    """The Tune function trainable: train the trial's params; every epoch's ``ray.train.report``
    reaches Tune through ``TuneReportCallback`` (that is what ASHA decides on)."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from madapter.train.driver import train
    from madapter.tune.stopping import RegisterController, stopped_by_sweep

    os.chdir(ctx.workdir)
    trial_id = ray.tune.get_context().get_trial_id()
    params = trial_params(Params.model_validate(base), config, ctx, trial_id)
    done_before = _epochs_checkpointed(params)
    callbacks = [RegisterController(ctx.name, trial_id), TuneReportCallback()]
    try:
        result = train(params, parent_run_id=ctx.parent_run_id, callbacks=callbacks)
    except Exception:
        if stopped_by_sweep(ctx.name, trial_id):
            return  # ASHA stopped it and the sweep aborted its Train run: not a failure
        raise
    if result.history and result.epochs_done <= done_before:
        # The Train run had already trained every epoch (the sweep was interrupted after its last
        # report, before Tune recorded the trial as done): nothing was reported this time.
        last = result.history[-1]
        ray.tune.report({key: last[key] for key in ("epoch", "val_acc", "train_loss") if key in last})


def _epochs_checkpointed(params: Params) -> int:
    """The last epoch checkpointed by this trial's Train run (0: none yet)."""
    from madapter.train.identity import ray_run_name
    from madapter.train.state import latest_checkpoint_dir, read_meta

    latest = latest_checkpoint_dir(Path(params.train.storage_path) / ray_run_name(params))
    return int(read_meta(latest)["epoch"]) if latest is not None else 0
