"""What the train driver hands every Ray Train worker: one typed, frozen, picklable record.

The driver resolves everything a worker must not resolve itself -- the validated params, absolute
paths, the validation split, the MLflow run and tracking URI, where to write the status files --
into a :class:`WorkerConfig` (:func:`madapter.train.driver.train`); Ray pickles it to each worker,
where :func:`madapter.train.loop.train_loop_per_worker` reads it (nothing here depends on the
worker's cwd).  What the worker reads is a :class:`TrainData`, built and checked on the driver by
:func:`madapter.train.source.train_data`.

Nothing here is stored in a checkpoint: a resumed run gets a freshly built config (the checkpoint
carries the MLflow run id, :mod:`madapter.train.state`).  This module imports nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from madapter.config import Params


@dataclass(frozen=True)
class TrainData:
    """What a worker trains and validates on (paths absolute, resolved on the driver)."""

    frames: Path
    """The frame store (``StagePaths.frames``); what ``train.source: frames`` reads."""
    features: Path | None
    """The cached backbone outputs (``StagePaths.features``) with ``train.source: features``, else ``None``."""
    val_split: str
    """The split validated on: ``val``, or ``test`` for a data set without one (the index's record,
    :func:`madapter.data.index.schema.eval_split`)."""


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a Ray Train worker gets from the driver (:func:`madapter.train.loop.train_loop_per_worker`)."""

    params: Params
    """The validated params (a frozen pydantic model)."""
    data: TrainData
    run_id: str
    """The MLflow run the driver opened (or resumes); a restored checkpoint's own run id wins."""
    tracking_uri: str
    """The MLflow tracking URI rank 0 logs to."""
    status_dir: Path
    """Where each rank writes ``workers/rank-<r>.json`` (:func:`madapter.train.driver.status_dir`)."""
