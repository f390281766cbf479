"""Evaluation stage: the trained checkpoint on a named multi-view protocol.

Protocol ``<frames>x<clips>x<crops>`` (e.g. ``8x1x1``, ``8x4x3``): each video is seen as
``clips`` temporal windows times ``crops`` spatial crops; the view probabilities are averaged
(:func:`madapter.metrics.average_views`).  Results go to ``outputs/evaluate`` (metrics for
``dvc metrics``, CSV/JSON plot data for ``dvc plots``) and into the training run in MLflow,
so one run holds its training curves and its test numbers.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from madapter import metrics
from madapter.config import ConfigError, Params
from madapter.paths import StagePaths

logger = logging.getLogger(__name__)


def protocol_name(params: Params) -> str:
    """``frames x clips x crops``: what a metric was measured on (compared across runs by the registry)."""
    return f"{params.model.num_frames}x{params.evaluate.clips}x{params.evaluate.crops}"


def read_run_info(paths: StagePaths) -> dict[str, Any]:
    """``outputs/train/run.json`` (MLflow run of the checkpoint); clear error if training never ran."""
    run_file = paths.train / "run.json"
    if not run_file.is_file():
        raise ConfigError(f"{run_file}: not found; run the train stage first (python -m madapter train)")
    return json.loads(run_file.read_text())


def _eval_split(params: Params, frames: Path) -> str:
    from madapter.data.store import FrameStore

    split = params.evaluate.split
    if split == "val" and len(FrameStore(frames, "val")) == 0:
        logger.warning("%s has no val videos: evaluating on the test split", params.dataset.name)
        return "test"
    return split


@torch.no_grad()
def view_logits(model: torch.nn.Module, dataset, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-view logits ``[N, V, C]`` and labels ``[N]`` of every item of a :class:`ClipDataset`."""
    from torch.utils.data import DataLoader

    model.eval()
    parts, labels = [], []
    for x, y in tqdm(DataLoader(dataset, batch_size=batch_size, shuffle=False), desc="evaluate", leave=False):
        if x.ndim == 5:  # single view: [B, T, 3, H, W]
            x = x[:, None]
        b, v = x.shape[:2]
        logits = model(x.flatten(0, 1)).float().reshape(b, v, -1)
        parts.append(logits.cpu().numpy())
        labels.append(y.numpy())
    if not parts:
        raise ConfigError(f"{dataset.store.split_dir}: the split has no videos to evaluate")
    return np.concatenate(parts), np.concatenate(labels)


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def evaluate(params: Params) -> dict[str, Any]:
    """Evaluate ``outputs/train/checkpoint.pt``; write ``outputs/evaluate/*``; log to the training run."""
    from madapter.data.clips import ClipDataset
    from madapter.data.store import FrameStore
    from madapter.models.checkpoint import load_checkpoint
    from madapter.tracking import get_client

    paths = StagePaths.from_params(params)
    checkpoint = paths.train / "checkpoint.pt"
    if not checkpoint.is_file():
        raise ConfigError(f"{checkpoint}: not found; run the train stage first (python -m madapter train)")
    run = read_run_info(paths)
    model, ckpt = load_checkpoint(checkpoint, map_location="cpu")
    classes = list(ckpt["classes"])
    frames = paths.frames
    split = _eval_split(params, frames)
    store = FrameStore(frames, split)
    if list(store.classes) != classes:
        raise ConfigError(f"{frames}/store.json: classes differ from the checkpoint's; re-run train on this frame store")
    cfg = model.data_config
    dataset = ClipDataset(
        store, num_frames=params.model.num_frames, train=False, mean=cfg["mean"], std=cfg["std"],
        crop_size=int(cfg["input_size"][-1]), seed=params.base.seed,
        clips=params.evaluate.clips, crops=params.evaluate.crops,
    )
    logits, labels = view_logits(model, dataset, params.evaluate.batch_size)
    scores = metrics.average_views(logits)
    report = metrics.classification_report(scores, labels, len(classes))
    protocol = protocol_name(params)

    out = paths.evaluate
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "top1": report["top1"],
        "top5": report["top5"],
        "mean_class_acc": report["mean_class_acc"],
        "protocol": protocol,
        "frames": params.model.num_frames,
        "clips": params.evaluate.clips,
        "crops": params.evaluate.crops,
        "dataset": params.dataset.name,
        "split": split,
        "num_videos": report["num_videos"],
        "num_classes": len(classes),
        "checkpoint_md5": _md5(checkpoint),
        "run_id": run["run_id"],
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    metrics.write_confusion_csv(report["confusion"], classes, out / "confusion.csv")
    metrics.write_predictions_csv(scores.argmax(1), labels, classes, out / "predictions.csv")
    metrics.write_per_class_csv(report["confusion"], classes, out / "per_class.csv")
    (out / "train_curves.json").write_text(json.dumps(ckpt["extra"].get("history", []), indent=2))
    png = metrics.plot_confusion(report["confusion"], classes, out / "confusion_matrix.png", f"{split} {protocol}")

    client = get_client(params)
    run_id = run["run_id"]
    prefix = f"{split}_{protocol}"
    client.log_batch(
        run_id,
        metrics=[_metric(f"{prefix}_{k}", result[k]) for k in ("top1", "top5", "mean_class_acc") if np.isfinite(result[k])],
    )
    client.set_tag(run_id, "eval_protocol", protocol)
    client.set_tag(run_id, "eval_split", split)
    for path in (out / "metrics.json", out / "per_class.csv", out / "confusion.csv", png):
        client.log_artifact(run_id, str(path), f"evaluate/{protocol}")
    logger.info("%s %s on %d videos: top1 %.4f top5 %.4f mean class %.4f", split, protocol,
                result["num_videos"], result["top1"], result["top5"], result["mean_class_acc"])
    return result


def _metric(key: str, value: float):
    import time

    from mlflow.entities import Metric

    return Metric(key, float(value), int(time.time() * 1000), 0)
