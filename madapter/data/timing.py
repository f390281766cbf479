"""Wall time and throughput of a data stage, written OUTSIDE the stage's DVC-hashed output.

Why a separate file: DVC hashes what the scan and decode stages write, and training's fingerprint
hashes ``store.json``.  A duration inside those files made ``dvc repro --force decode`` on unchanged
inputs change their hashes, re-run training and restart it from scratch instead of resuming.  So
the stage outputs hold only what the inputs determine, and timings (plus run-control values such
as the worker count) go to ``outputs/timings/<stage>.json``: a DVC metrics file (``cache: false``,
shown by ``dvc metrics show``) that no stage depends on.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from madapter.fileio import write_json_atomic
from madapter.paths import StagePaths

logger = logging.getLogger(__name__)


def stage_timing_path(paths: StagePaths, stage: str) -> Path:
    """``outputs/timings/<stage>.json`` (the path ``dvc.yaml`` declares as the stage's metrics)."""
    return paths.timings / f"{stage}.json"


def write_timing(paths: StagePaths, stage: str, started: float, videos: int, workers: int,
                 frames: int | None = None) -> dict[str, float | int | str | None]:
    """Record how long ``stage`` took since ``started`` (a ``time.perf_counter()`` value); returns the record."""
    seconds = time.perf_counter() - started
    record: dict[str, float | int | str | None] = {
        "stage": stage,
        "videos": videos,
        "workers": workers,
        "seconds": round(seconds, 3),
        "videos_per_s": round(videos / seconds, 2) if seconds > 0 else None,
    }
    if frames is not None:
        record["frames_per_s"] = round(frames / seconds, 1) if seconds > 0 else None
    path = stage_timing_path(paths, stage)
    write_json_atomic(path, record)
    logger.info("%s: %d videos in %.1f s (%s videos/s, %d workers) -> %s", stage, videos, seconds,
                record["videos_per_s"], workers, path)
    return record
