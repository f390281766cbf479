"""The registered model's input example: one real video, as bytes, that the model scores.

MLflow stores the example with the model (``input_example.json`` and ``serving_input_example.json``,
the latter a ready ``/invocations`` request body) and, when the model is logged, serves it once to
the freshly saved model, so a version whose pyfunc cannot score a video is caught at register.
Bytes (the ``video_bytes`` column, base64 in JSON), never a path: a path would name a file of
this machine, which neither MLflow's check elsewhere nor a reader of the example has.

The video is the smallest of the evaluated split that the model scores without an error (the kind
of input the card's numbers are about, quick to score; a split may hold unreadable files, which the
served model answers with an ``error`` row: no example).  When there is no index, no such video
among the :data:`MAX_TRIES` smallest, or all are larger than :data:`MAX_EXAMPLE_BYTES` (the example
is stored twice, base64, with the model), a clip of the built-in synthetic set is generated instead.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from madapter.config import Params, SyntheticSection
from madapter.data.index.schema import read_index
from madapter.paths import StagePaths

if TYPE_CHECKING:
    from madapter.predict import VideoPredictor

logger = logging.getLogger(__name__)

MAX_EXAMPLE_BYTES = 2 * 2**20
MAX_TRIES = 5


def input_example(params: Params, split: str, predictor: VideoPredictor) -> pd.DataFrame:
    """A one-row frame with the ``video_bytes`` of the example video (``predictor``: the model being logged)."""
    from madapter.predict import error_line

    for path in smallest_videos(params, split)[:MAX_TRIES]:
        try:
            predictor.predict_path(path, 1)
        except Exception as err:  # noqa: BLE001 - any failure means "not this video", as the served model says
            logger.info("input example: skipping %s", error_line(path, err))
            continue
        return pd.DataFrame({"video_bytes": [path.read_bytes()]})
    logger.info("input example: no scorable %s video of at most %d bytes; using a generated clip", split,
                MAX_EXAMPLE_BYTES)
    return pd.DataFrame({"video_bytes": [generated_clip(params.base.seed)]})


def smallest_videos(params: Params, split: str) -> list[Path]:
    """``split``'s video files of at most :data:`MAX_EXAMPLE_BYTES`, smallest first (none without an index)."""
    paths = StagePaths.from_params(params)
    try:
        rows = read_index(paths.index, split)
    except (FileNotFoundError, ValueError):
        return []
    files = [paths.raw / row.path for row in rows]
    sizes = {path: path.stat().st_size for path in files if path.is_file()}
    return sorted((path for path, size in sizes.items() if 0 < size <= MAX_EXAMPLE_BYTES), key=sizes.__getitem__)


def generated_clip(seed: int) -> bytes:
    """An mp4 of the built-in synthetic set's first class (16 frames, 64 px: a few kB), made on the spot."""
    from madapter.data.acquire.synthetic import encode_video, render

    cfg = SyntheticSection()
    with tempfile.TemporaryDirectory() as tmp:
        return encode_video(Path(tmp) / "example.mp4", render(0, 0, cfg, seed), cfg.fps).read_bytes()
