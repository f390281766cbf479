"""Evaluation stage: the trained checkpoint on a named multi-view protocol.

Protocol ``<frames>x<clips>x<crops>`` (e.g. ``8x1x1``, ``8x3x3``): each SOURCE video is seen as
``clips`` temporal views spread over its whole length times ``crops`` crops along its long side
at the short-side scale (:class:`madapter.data.clips.ViewProtocol`, the same views ``predict`` and
the served model take); the view probabilities are averaged (:func:`madapter.metrics.average_views`).
The model runs on ``evaluate.device``, all views of a batch of videos in one forward pass.
Results go to ``outputs/evaluate`` (``metrics.json`` for ``dvc metrics``, CSV plot data for
``dvc plots``) and into the training run in MLflow, so one run holds its training curves and its
test numbers.  The training curves themselves are train's output (``outputs/train/history.json``).

With ``train.source: features`` the same views come from the ``features`` stage instead: it ran
the frozen backbone once on exactly these protocol views of the source videos, so evaluation
loads only the checkpoint's head and scores the stored views (:func:`feature_protocol_logits`),
averaged the same way.  ``metrics.json`` records which (``"source"``); the numbers agree with
the frames path within the stored precision (``features.dtype``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm import tqdm

from madapter import metrics
from madapter.config import ConfigError, Params
from madapter.data.clips import SourceVideo, SourceVideoDataset, ViewProtocol
from madapter.fileio import file_digest, write_json_atomic
from madapter.inference import head_view_logits, load_head, load_model, model_device, view_logits
from madapter.models.precision import describe_recorded
from madapter.paths import StagePaths

if TYPE_CHECKING:
    from madapter.data.features.feature_store import FeatureStore
    from madapter.models.headless import FeatureClassifier

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


def protocol_videos(paths: StagePaths, split: str) -> list[SourceVideo]:
    """The split's videos to evaluate (:func:`madapter.data.evaluated.evaluated_videos`, the features
    stage's rule too), as the source videos the protocol's views are decoded from."""
    from madapter.data.evaluated import evaluated_videos

    return [SourceVideo(video.source, video.label, video.start, video.end) for video in evaluated_videos(paths, split)]


def protocol_logits(model: torch.nn.Module, dataset: SourceVideoDataset, batch_size: int,
                    loader_workers: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-view logits ``[N, V, C]`` and labels ``[N]``; source videos decode in ``loader_workers``
    processes while the model scores the previous batch's views on its device."""
    from torch.utils.data import DataLoader

    if len(dataset) == 0:
        raise ConfigError("evaluate: the split has no videos to evaluate (see the scan report and store.json)")
    # spawn, not fork: the parent may hold Ray/gRPC threads and a CUDA context, neither fork-safe.
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=loader_workers,
                        pin_memory=model_device(model).type == "cuda", worker_init_fn=_one_thread,
                        multiprocessing_context="spawn" if loader_workers > 0 else None)
    parts, labels = [], []
    for views, y in tqdm(loader, desc=f"evaluate {dataset.protocol.name}", unit="batch", leave=False,
                           disable=None):
        parts.append(view_logits(model, views))
        labels.append(y.numpy())
    return np.concatenate(parts), np.concatenate(labels)


def _one_thread(_worker_id: int) -> None:
    torch.set_num_threads(1)  # decoding workers: one core each, the model has the rest


@dataclass
class Scored:
    """Per-view logits of a split and what produced them."""

    logits: np.ndarray
    """``[N, V, C]``."""
    labels: np.ndarray
    classes: list[str]
    split: str
    half_precision: bool
    device: torch.device
    extracted: dict[str, str] | None = None
    """Where the backbone ran for the cached views scored, from their ``features.json`` (``None``: it
    ran here, on frames; :func:`madapter.data.features.feature_store.backbone_computed_on`)."""


def evaluate(params: Params) -> dict[str, Any]:
    """Evaluate ``outputs/train/checkpoint.pt`` on ``evaluate.split`` (``val`` on a data set without one:
    ``test``, as the index recorded, :func:`~madapter.data.index.schema.eval_split`); write
    ``outputs/evaluate/*``; log to the training run."""
    from madapter.data.index.schema import eval_split

    paths = StagePaths.from_params(params)
    checkpoint = paths.train / "checkpoint.pt"
    if not checkpoint.is_file():
        raise ConfigError(f"{checkpoint}: not found; run the train stage first (python -m madapter train)")
    run = read_run_info(paths)
    source = params.train.source
    split = eval_split(paths.index, params.evaluate.split)
    score = score_features if source == "features" else score_frames
    scored = score(params, paths, checkpoint, split)
    scores = metrics.average_views(scored.logits)
    report = metrics.classification_report(scores, scored.labels, len(scored.classes))
    result = {
        **{k: report[k] for k in ("top1", "top5", "mean_class_acc")},
        "protocol": protocol_name(params),
        "frames": params.model.num_frames,
        "clips": params.evaluate.clips,
        "crops": params.evaluate.crops,
        "source": source,
        "dataset": params.dataset.name,
        "split": scored.split,
        "num_videos": report["num_videos"],
        "num_classes": len(scored.classes),
        "checkpoint_md5": file_digest(checkpoint, "md5"),
        "run_id": run["run_id"],
        "half_precision": scored.half_precision,
        **describe_recorded(scored.half_precision, params.train.amp, scored.device, scored.extracted),
    }
    files = _write_outputs(paths.evaluate, result, report["confusion"], scores.argmax(1), scored.labels,
                           scored.classes)
    _log_to_run(params, result, files)
    logger.info("%s %s on %d videos (%s): top1 %.4f top5 %.4f mean class %.4f", scored.split, result["protocol"],
                result["num_videos"], source, result["top1"], result["top5"], result["mean_class_acc"])
    return result


def score_frames(params: Params, paths: StagePaths, checkpoint: Path, split: str) -> Scored:
    """The full model on the protocol's views of ``split``, decoded from the SOURCE videos."""
    from madapter.data.store.frame_store import FrameStore

    model, ckpt = load_model(checkpoint, params.evaluate.device)
    classes = list(ckpt["classes"])
    if list(FrameStore(paths.frames, split).classes) != classes:
        raise ConfigError(f"{paths.frames}/store.json: classes differ from the checkpoint's; "
                          f"re-run train on this frame store")
    view_protocol = ViewProtocol.from_params(params, model.data_config)
    dataset = SourceVideoDataset(protocol_videos(paths, split), view_protocol, params.decode.backend)
    logits, labels = protocol_logits(model, dataset, params.evaluate.batch_size, params.evaluate.loader_workers)
    return Scored(logits, labels, classes, split, model.half_precision, model_device(model))


def score_features(params: Params, paths: StagePaths, checkpoint: Path, split: str) -> Scored:
    """The checkpoint's head alone on ``split``'s same views, as the ``features`` stage stored them (no backbone)."""
    from madapter.data.features.dataset import check_features_match, check_protocol_views, level_infos
    from madapter.data.features.feature_store import FeatureStore, backbone_computed_on, read_features_meta

    root = paths.features.resolve()
    meta = read_features_meta(root)
    check_features_match(params, meta, root, paths.frames)
    store = FeatureStore(root, split)
    check_protocol_views(store, root, split, params.evaluate.clips, params.evaluate.crops)
    head, ckpt = load_head(checkpoint, level_infos(store), store.pooled_dim, meta["backbone"], params.evaluate.device)
    classes = list(ckpt["classes"])
    if list(store.classes) != classes:
        raise ConfigError(f"{root}/features.json: classes differ from the checkpoint's; re-run train on these features")
    logits, labels = feature_protocol_logits(head, store, params.evaluate.batch_size)
    return Scored(logits, labels, classes, split, params.model.half_precision, model_device(head),
                  backbone_computed_on(meta))


def feature_protocol_logits(head: FeatureClassifier, store: FeatureStore,
                            batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-view logits ``[N, V, C]`` and labels ``[N]`` of a split's stored protocol views (``batch_size`` videos
    per head call, in the store's order)."""
    from madapter.data.features.dataset import FeatureDataset, collate_features

    if len(store) == 0:
        raise ConfigError("evaluate: the split has no videos to evaluate (see the scan report and features.json)")
    dataset = FeatureDataset(store, train=False, view=None, with_levels=head.uses_levels)
    parts, labels = [], []
    for start in tqdm(range(0, len(dataset), batch_size), desc="evaluate features", unit="batch", leave=False,
                      disable=None):
        (levels, pooled), y = collate_features([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))])
        parts.append(head_view_logits(head, levels, pooled))
        labels.append(y.numpy())
    return np.concatenate(parts), np.concatenate(labels)


def _write_outputs(out: Path, result: dict[str, Any], confusion: np.ndarray, preds: np.ndarray,
                   labels: np.ndarray, classes: list[str]) -> list[Path]:
    """``metrics.json`` (``dvc metrics``), the CSVs ``dvc plots`` reads and the confusion PNG.

    Returns the files logged to MLflow.  The training curves are train's own output
    (``outputs/train/history.json``), not copied here.
    """
    write_json_atomic(out / "metrics.json", result)
    metrics.write_confusion_csv(confusion, classes, out / "confusion.csv")
    metrics.write_predictions_csv(preds, labels, classes, out / "predictions.csv")
    metrics.write_per_class_csv(confusion, classes, out / "per_class.csv")
    title = f"{result['split']} {result['protocol']}"
    png = metrics.plot_confusion(confusion, classes, out / "confusion_matrix.png", title)
    return [out / "metrics.json", out / "per_class.csv", out / "confusion.csv", png]


def _log_to_run(params: Params, result: dict[str, Any], files: list[Path]) -> None:
    """Metrics ``<split>_<protocol>_<metric>``, protocol/split tags and the files, into the training run."""
    from madapter.tracking import get_client, log_metrics

    client = get_client(params)
    run_id, split, protocol = result["run_id"], result["split"], result["protocol"]
    prefix = f"{split}_{protocol}"
    log_metrics(client, run_id, {f"{prefix}_{k}": result[k] for k in ("top1", "top5", "mean_class_acc")})
    client.set_tag(run_id, "eval_protocol", protocol)
    client.set_tag(run_id, "eval_split", split)
    for path in files:
        client.log_artifact(run_id, str(path), f"evaluate/{protocol}")
