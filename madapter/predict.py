"""Classify raw video files with a trained checkpoint or a registered MLflow model.

:class:`VideoPredictor` is the one implementation of "video file -> top-k labels": the CLI
(``python -m madapter predict``) uses it directly for a checkpoint path, and the MLflow pyfunc
model (:mod:`madapter.registry`) wraps it, so a served model and a local prediction agree.

A video that cannot be read gives one error line for that file; the others are still predicted.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from madapter.config import ConfigError, Params
from madapter.data.clips import VideoViews, ViewProtocol, load_video_views
from madapter.errors import first_line

logger = logging.getLogger(__name__)


class VideoPredictor:
    """A loaded model on its device, its label map and the evaluation protocol; top-k per video."""

    def __init__(self, model: torch.nn.Module, classes: Sequence[str], protocol: ViewProtocol) -> None:
        self.model = model.eval()
        self.classes = list(classes)
        self.protocol = protocol

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, protocol: ViewProtocol | None = None, params: Params | None = None,
        device: str | None = None, backbone_weights: str | Path | None = None,
    ) -> VideoPredictor:
        """Load ``checkpoint.pt`` on ``device`` (default ``evaluate.device`` of ``params``); the
        protocol from ``protocol`` or else from ``params`` (its ``evaluate`` section);
        ``backbone_weights``: a local copy of the backbone's weights (a registered model's)."""
        from madapter.inference import load_model

        params = params or Params()
        model, ckpt = load_model(path, device or params.evaluate.device, backbone_weights)
        if protocol is None:
            protocol = ViewProtocol.from_params(params, model.data_config)
        return cls(model, ckpt["classes"], protocol)

    def views(self, video: str | Path) -> VideoViews:
        """The protocol's views of one video file (exactly what ``evaluate`` builds for it)."""
        return load_video_views(Path(video), self.protocol)

    @torch.no_grad()
    def probabilities(self, video: str | Path) -> np.ndarray:
        """Class probabilities of one video file, averaged over its clips x crops views."""
        from madapter.inference import view_logits
        from madapter.metrics import average_views

        logits = view_logits(self.model, self.views(video).tensor[None])
        return average_views(logits)[0]

    def top_k(self, probs: np.ndarray, k: int) -> list[dict[str, Any]]:
        order = np.argsort(-probs, kind="stable")[: min(k, len(probs))]
        return [{"label": self.classes[i], "index": int(i), "score": float(probs[i])} for i in order]

    def predict_path(self, video: str | Path, k: int) -> list[dict[str, Any]]:
        return self.top_k(self.probabilities(video), k)

    def predict_bytes(self, data: bytes, k: int, suffix: str = ".mp4") -> list[dict[str, Any]]:
        """Predict an in-memory video (e.g. an HTTP upload): decoders need a file, so use a temp one."""
        fd, tmp = tempfile.mkstemp(suffix=suffix)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return self.predict_path(tmp, k)
        finally:
            os.unlink(tmp)


def error_line(video: str | Path, err: BaseException) -> str:
    """One line naming the video and the cause (without repeating the path when the error has it)."""
    first = first_line(err)
    return first if first.startswith(str(video)) else f"{video}: {first}"


def predict_many(predictor: VideoPredictor, videos: Sequence[str | Path], k: int) -> list[list[dict] | dict]:
    """Top-k per video; a failing video yields ``{"error": ...}`` and one logged line, not an exception."""
    results: list[list[dict] | dict] = []
    for video in videos:
        try:
            results.append(predictor.predict_path(video, k))
        except Exception as err:  # noqa: BLE001 - one bad file must not stop the others
            message = error_line(video, err)
            logger.error(message)
            results.append({"error": message})
    return results


def is_model_uri(model: str) -> bool:
    """``models:/name@alias``, ``runs:/id/model`` and friends, as opposed to a checkpoint file path."""
    return "://" in model or model.startswith(("models:/", "runs:/"))


def predict(
    videos: Sequence[str | Path], model: str, params: Params | None = None, top_k: int = 5
) -> list[list[dict] | dict]:
    """Top-k labels for each video with a checkpoint path or an MLflow model URI.

    Returns one entry per video, in order: a list of ``{"label", "index", "score"}`` or
    ``{"error": "<one line>"}`` for a video that could not be read.
    """
    params = params or Params()
    if not is_model_uri(model):
        if not Path(model).is_file():
            raise ConfigError(f"{model}: checkpoint not found (train first, or pass --model models:/<name>@champion)")
        return predict_many(VideoPredictor.from_checkpoint(model, params=params), videos, top_k)

    import mlflow
    import pandas as pd

    from madapter.tracking import fluent_tracking, resolve_tracking_uri

    uri = resolve_tracking_uri(params)
    try:
        with fluent_tracking(uri):
            pyfunc = mlflow.pyfunc.load_model(model, model_config={"device": params.evaluate.device})
    except Exception as err:  # noqa: BLE001 - MlflowException, missing alias, unreachable server
        raise ConfigError(f"{model}: cannot load the model from {uri}: {first_line(err)}") from None
    # The files' bytes, named by their paths: a served pyfunc refuses paths (any client could name any
    # file on the server); here the user names their own files, so this process reads them.
    results: list[list[dict] | dict | None] = [None] * len(videos)
    readable: dict[int, bytes] = {}
    for i, video in enumerate(videos):
        try:
            readable[i] = Path(video).read_bytes()
        except OSError as err:
            results[i] = {"error": error_line(video, err)}
            logger.error(results[i]["error"])
    if readable:
        frame = pd.DataFrame({"video": [str(videos[i]) for i in readable], "video_bytes": list(readable.values())})
        out = pyfunc.predict(frame, params={"top_k": top_k})
        for i, (_, row) in zip(readable, out.iterrows(), strict=True):
            if row["error"]:
                logger.error(row["error"])
                results[i] = {"error": row["error"]}
            else:
                results[i] = [{"label": lbl, "score": float(s)} for lbl, s in zip(row["labels"], row["scores"], strict=True)]
    return results
