"""The order-blind baseline ``make demo`` prints beside the model: ``linear`` on the same features.

Why: the built-in synthetic set is made of reversal pairs (the same frames played forwards or
backwards), so a model that averages per-frame features over time cannot tell the two classes of
a pair apart and sits at 50% on each pair.  The gap between that model and ``madapter`` is what
the temporal modules buy, and showing both numbers side by side is the demo's point.

The baseline is the same model family with ``model.tuning: linear`` (the backbone's pooled
feature, averaged over frames, then a linear head), trained with the same recipe, except for at
most :data:`BASELINE_EPOCHS` epochs, on the SAME cached features (``train.source: features``: no second extraction), through the same CLI
commands a user runs.  It writes to its own ``base.outputs_dir`` and MLflow run and is never
registered, so it cannot replace the model the pipeline produced; it writes nothing DVC tracks
(its Ray checkpoints included), so a second ``make demo`` re-runs no stage.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from madapter.config import Params
from madapter.tracking import resolve_tracking_uri
from pipelines.console import StageOutput, stage_log_path
from pipelines.dvc_stages import subprocess_env

logger = logging.getLogger(__name__)

BASELINE_DIR = "baseline-linear"
"""Under ``base.outputs_dir``: the baseline's ``train/`` and ``evaluate/`` outputs."""

BASELINE_EPOCHS = 10
"""Enough for a linear head on frame-averaged features: on the demo's test split it reached top-1
0.16 after 10 epochs and 0.18 after 60 (2026-11-24); no number of epochs teaches it frame order.
The recipe sweep's ``temporal: none`` row (benchmarks/results/recipe_sweep.md) is the same-budget order-blind branch."""


def baseline_overrides(params: Params, repo: Path) -> dict[str, str]:
    """The ``-S`` settings that turn the pipeline's params into the baseline's.

    The tracking URI is resolved first and pinned: the default store lives under
    ``base.outputs_dir``, which the baseline changes, and both runs belong in one store.
    """
    outputs = Path(params.base.outputs_dir)
    outputs = outputs if outputs.is_absolute() else repo / outputs
    pinned = params.model_copy(update={"base": params.base.model_copy(update={"outputs_dir": outputs})})
    return {
        "model.tuning": "linear",
        "train.epochs": str(min(params.train.epochs, BASELINE_EPOCHS)),
        "train.run_name": f"{params.train.run_name}-order-blind-linear",
        "base.outputs_dir": str(outputs / BASELINE_DIR),
        # Its own Ray storage: train.storage_path is a DVC output of the pipeline's train stage, and
        # a baseline run written there made the next `make demo` retrain the model.
        "train.storage_path": str(outputs / BASELINE_DIR / "ray"),
        "mlflow.tracking_uri": resolve_tracking_uri(pinned),
    }


def run_baseline(params: Params, repo: Path) -> dict[str, Any] | None:
    """Train and evaluate the baseline; its ``metrics.json`` (``None`` when it is not cheap here).

    Only on cached features: through the frames it would run the backbone every step, which
    would make the demo several times longer for a comparison.
    """
    if params.train.source != "features":
        logger.info("order-blind baseline skipped: it trains on cached features (train.source: features)")
        return None
    overrides = baseline_overrides(params, repo)
    sets = [arg for key, value in overrides.items() for arg in ("-S", f"{key}={value}")]
    logger.info("order-blind baseline: model.tuning=linear on the same features, %s epochs",
                overrides["train.epochs"])
    for stage in ("train", "evaluate"):
        command = [sys.executable, "-m", "madapter", stage, "--params", str(repo / "params.yaml"), *sets]
        _run_logged(f"baseline-{stage}", command, repo)
    return read_baseline_metrics(params, repo)


def _run_logged(name: str, command: list[str], repo: Path) -> None:
    """Run a baseline command as a pipeline stage is run: its whole output to
    ``outputs/logs/<name>.log``, its start, epochs, warnings and one-line result to the terminal
    (:mod:`pipelines.console`).  Raises ``CalledProcessError`` when it fails."""
    with StageOutput(name, logger, log_file=stage_log_path(repo, name)) as output:
        output.begin(" ".join(command))
        with subprocess.Popen(command, cwd=repo, env=subprocess_env(), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                output.line(line)
        if proc.returncode != 0:
            raise subprocess.CalledProcessError(proc.returncode, command, "\n".join(output.tail))
        output.end(ran=True)


def read_baseline_metrics(params: Params, repo: Path) -> dict[str, Any] | None:
    """The baseline's ``metrics.json``, or ``None`` when it has not been evaluated."""
    path = Path(baseline_overrides(params, repo)["base.outputs_dir"]) / "evaluate" / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None
