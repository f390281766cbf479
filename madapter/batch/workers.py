"""What runs on Ray for ``batch-predict``: decoding tasks (CPU) and the classifying actor (CPU or GPU).

:func:`decode_views` is a plain function, so Ray Data runs it as stateless tasks spread over the
cluster's CPUs; it builds each video's evaluation views exactly as ``predict`` does
(:func:`madapter.data.clips.load_video_views`).  A video that cannot be read does not raise: its
row carries the one-line cause in ``error`` and zero views of the same shape (the tensor column
stays fixed-shape; the classifier skips those rows).

:class:`Classifier` is a callable class, so Ray Data runs it on an actor pool: each actor builds
the model ONCE (:meth:`madapter.predict.VideoPredictor.from_checkpoint`) and then scores batches
of decoded videos, all their views in one forward pass (:func:`madapter.inference.view_logits`),
averaged per video as ``predict`` averages them (:func:`madapter.metrics.average_views`).

Precision on a GPU: no autocast is wrapped around the forward pass here.  The model applies
``model.half_precision`` to its frozen backbone itself and keeps the branch in fp32, exactly as
in ``evaluate``, ``predict`` and the served model; an outer autocast would also lower the branch
and make batch scores differ from ``predict``'s on the same GPU.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from madapter.data.video import display_path

logger = logging.getLogger(__name__)


def _segment_bound(value: Any) -> float | None:
    """A ``start``/``end`` value of a Ray batch (missing bounds arrive as NaN or None) as seconds or None."""
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def cause(source: str, err: BaseException) -> str:
    """The error's first line without the file's name in front (the row's ``path`` already says which file)."""
    from madapter.errors import first_line

    text = first_line(err)
    for form in (display_path(source), source):
        if text.startswith(form):
            text = text[len(form):].lstrip(": ").strip() or type(err).__name__
            break
    return text


def decode_views(batch: dict[str, np.ndarray], protocol: dict[str, Any], backend: str) -> dict[str, np.ndarray]:
    """Ray Data task: rows ``idx, source, start, end`` -> ``idx, views [V, T, 3, S, S] float32, error``."""
    import torch

    from madapter.data.clips import ViewProtocol, load_video_views

    torch.set_num_threads(1)  # one task per core: Ray schedules as many as the cluster has CPUs
    p = ViewProtocol.from_dict(protocol)
    shape = (p.clips * p.crops, p.num_frames, 3, p.crop_size, p.crop_size)
    views: list[np.ndarray] = []
    errors: list[str] = []
    for raw, start, end in zip(batch["source"], batch["start"], batch["end"], strict=True):
        source = os.fsdecode(bytes(raw))
        try:
            if not os.path.lexists(source):
                raise FileNotFoundError(f"{display_path(source)}: file not found")
            tensor = load_video_views(Path(source), p, _segment_bound(start), _segment_bound(end), backend).tensor
            views.append(tensor.numpy().astype(np.float32, copy=False))
            errors.append("")
        except Exception as err:  # noqa: BLE001 - one bad video is one error row, never a failed job
            views.append(np.zeros(shape, np.float32))
            errors.append(cause(source, err))
    return {"idx": batch["idx"], "views": np.stack(views), "error": np.asarray(errors, dtype=object)}


def label_columns(k: int) -> list[str]:
    """``label_1, score_1, ..., label_k, score_k``: top-k as flat columns (the same in CSV and Parquet)."""
    return [name for i in range(1, k + 1) for name in (f"label_{i}", f"score_{i}")]


class Classifier:
    """Ray Data actor: decoded views -> top-k labels and scores per video (model built once per actor)."""

    def __init__(self, bundle: list, top_k: int, use_gpu: bool, threads: int) -> None:
        import ray
        import torch

        from madapter.data.clips import ViewProtocol
        from madapter.predict import VideoPredictor

        torch.set_num_threads(max(1, threads))
        checkpoint, protocol = ray.get(bundle[0])  # one copy in the object store, fetched once per actor
        # num_gpus=1: Ray has set CUDA_VISIBLE_DEVICES to this actor's GPU, so "cuda" is that GPU.
        self.device = "cuda" if use_gpu else "cpu"
        with tempfile.TemporaryDirectory(prefix="madapter-actor-") as tmp:
            path = Path(tmp) / "checkpoint.pt"
            path.write_bytes(checkpoint)
            self.predictor = VideoPredictor.from_checkpoint(path, ViewProtocol.from_dict(protocol), device=self.device)
        self.k = min(top_k, len(self.predictor.classes))

    def __call__(self, batch: dict[str, np.ndarray]):
        import pandas as pd
        import torch

        from madapter.inference import view_logits
        from madapter.metrics import average_views

        errors = np.asarray(batch["error"], dtype=object)
        good = np.flatnonzero(errors == "")
        probs = np.empty((0, len(self.predictor.classes)))
        if len(good):
            views = torch.from_numpy(np.asarray(batch["views"])[good])  # fancy indexing copies: writable
            if self.device == "cuda":
                views = views.pin_memory()  # lets view_logits' non_blocking copy overlap
            probs = average_views(view_logits(self.predictor.model, views))
        columns: dict[str, list] = {name: [None] * len(errors) for name in label_columns(self.k)}
        for row, p in zip(good, probs, strict=True):
            for i, top in enumerate(self.predictor.top_k(p, self.k), start=1):
                columns[f"label_{i}"][row] = top["label"]
                columns[f"score_{i}"][row] = top["score"]
        typed = {name: pd.Series(values, dtype="string" if name.startswith("label_") else "float64")
                 for name, values in columns.items()}  # typed even when a whole batch failed (no null-typed column)
        return pd.DataFrame({"idx": np.asarray(batch["idx"], dtype=np.int64), **typed,
                             "error": pd.Series([str(e) for e in errors], dtype="string")})
