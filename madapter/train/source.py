"""What a worker trains on, chosen at ONE place: ``train.source`` (:func:`build_source`).

* ``frames``: the full model (:class:`~madapter.models.classifier.VideoClassifier`, backbone +
  adapter) on clips decoded from the frame store (:class:`~madapter.data.clips.ClipDataset`);
  the backbone runs every step.
* ``features``: the head alone (:class:`~madapter.models.headless.FeatureClassifier`) on the
  frozen backbone's outputs the ``features`` stage stored
  (:class:`~madapter.data.features.dataset.FeatureDataset`); NO backbone is built in the worker.

Everything downstream (DDP, the epoch, validation, checkpoints, MLflow) takes a :class:`Source`
and does not ask which one it got: batches are ``(inputs, labels)`` and the logits
``forward(*inputs)`` (:mod:`madapter.train.step`), and both models save the same checkpoint
format (:func:`madapter.models.checkpoint.save_checkpoint`), from which ``load_checkpoint``
rebuilds the full model.

The driver side of the switch is here too: :func:`train_data` resolves what the worker reads (a
:class:`~madapter.train.worker_config.TrainData`: absolute paths and the validation split, the
index's :func:`~madapter.data.index.schema.eval_split`) and checks it before any worker starts (the
frame store exists; or the features exist, are the outputs of ``params.model``'s backbone and hold
the evaluation protocol's views).  Both sources' training batches come through
:func:`train_loader`, whose page-locked memory on a CUDA worker is what makes the step's
``non_blocking`` copies asynchronous.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from madapter.config import ConfigError, Params
from madapter.train.worker_config import TrainData

if TYPE_CHECKING:
    from madapter.paths import StagePaths

logger = logging.getLogger(__name__)


@dataclass
class Source:
    """A worker's model and data, as the source gives them."""

    model: torch.nn.Module
    """``VideoClassifier`` (frames) or ``FeatureClassifier`` (features): what checkpoints save."""
    classes: list[str]
    train_ds: Dataset
    """Training items, per-epoch views (``set_epoch``)."""
    val_ds: Dataset
    """One view per validation video."""
    collate: Callable[[list], tuple]
    """Items -> ``(inputs, labels)``."""
    checkpoint_extra: dict[str, Any] = field(default_factory=dict)
    """Recorded in every checkpoint's ``extra`` (``source``, and the features' digest)."""


def pin_memory(device: torch.device) -> bool:
    """Whether batches for ``device`` go into page-locked host memory: only for CUDA.  A copy from
    pageable memory is synchronous whatever ``non_blocking`` says (the driver stages it through a
    pinned buffer), so without pinning the step waits for every batch's copy; on CPU pinning is pure
    overhead (and needs an accelerator)."""
    return device.type == "cuda"


def train_loader(dataset: Dataset, collate: Callable[[list], tuple], sampler: Sampler, batch_size: int,
                 workers: int, device: torch.device) -> DataLoader:
    """The training DataLoader of either source (clips or cached features), pinned for a CUDA ``device``."""
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate,
                      drop_last=False, pin_memory=pin_memory(device))


def build_source(params: Params, data: TrainData) -> Source:
    """THE switch: the model and datasets of ``train.source`` (call after seeding: it initialises the model)."""
    if params.train.source == "features":
        if data.features is None:
            raise ValueError("train.source: features but TrainData.features is None (build it with train_data)")
        return _features_source(params, data.features, data.val_split)
    return _frames_source(params, data.frames, data.val_split)


def _frames_source(params: Params, frames: Path, val_split: str) -> Source:
    """The full model; training clips (random views, per-epoch seeded), validation clips (one central view)."""
    from madapter.data.clips import ClipDataset
    from madapter.data.store.frame_store import FrameStore
    from madapter.models.build import build_model
    from madapter.train.step import collate_clips

    store = FrameStore(frames, "train")
    model = build_model(params.model, len(store.classes))
    data_config = model.data_config
    clip_kw = dict(num_frames=params.model.num_frames, mean=data_config["mean"], std=data_config["std"],
                   crop_size=int(data_config["input_size"][-1]), seed=params.base.seed)
    return Source(model, list(store.classes), ClipDataset(store, train=True, **clip_kw),
                  ClipDataset(FrameStore(frames, val_split), train=False, **clip_kw), collate_clips,
                  {"source": "frames"})


def _features_source(params: Params, root: Path, val_split: str) -> Source:
    """The head alone on the stored views: view ``epoch % V`` per training epoch, the central
    protocol view for validation (:mod:`madapter.data.features.dataset`)."""
    from madapter.data.features.dataset import (
        FeatureDataset,
        central_view,
        collate_features,
        features_digest,
        level_infos,
    )
    from madapter.data.features.feature_store import FeatureStore
    from madapter.models.headless import build_feature_classifier

    store, val_store = FeatureStore(root, "train"), FeatureStore(root, val_split)
    model = build_feature_classifier(params.model, level_infos(store), store.pooled_dim, len(store.classes),
                                     store.meta["backbone"])
    view = central_view(params.evaluate.clips, params.evaluate.crops)
    logger.info("training the %s head on cached features %s (%d train views per video, no backbone)",
                params.model.tuning, root, store.views)
    return Source(model, list(store.classes), FeatureDataset(store, train=True, with_levels=model.uses_levels),
                  FeatureDataset(val_store, train=False, view=view, with_levels=model.uses_levels),
                  collate_features, {"source": "features", "features_digest": features_digest(root)})


def train_data(params: Params, paths: StagePaths) -> TrainData:
    """What the worker reads, resolved and checked on the driver before any worker starts; one line
    naming what to fix otherwise.

    ``train.source: frames``: the frame store's train split must exist.  ``features``: the features
    must exist, be the outputs of ``params.model``'s backbone
    (:func:`~madapter.data.features.dataset.check_features_match`, incl.
    ``model.level_pool``: the rebuilt model pools the same way) and hold the evaluation protocol's
    views for the validation split.  The validation split is the index's
    (:func:`~madapter.data.index.schema.eval_split`, which logs when it is ``test``).
    """
    from madapter.data.index.schema import eval_split
    from madapter.data.store.frame_store import has_split

    frames = paths.frames.resolve()
    if params.train.source != "features":
        if not has_split(frames, "train"):
            raise ConfigError(f"{frames / 'train'}: no frame store found; run the decode stage first "
                              f"(python -m madapter decode)")
        return TrainData(frames=frames, features=None, val_split=eval_split(paths.index, "val"))

    from madapter.data.features.dataset import check_features_match, check_protocol_views
    from madapter.data.features.feature_store import FeatureStore, read_features_meta

    root = paths.features.resolve()
    check_features_match(params, read_features_meta(root), root, frames)
    val_split = eval_split(paths.index, "val")
    check_protocol_views(FeatureStore(root, val_split), root, val_split, params.evaluate.clips, params.evaluate.crops)
    return TrainData(frames=frames, features=root, val_split=val_split)
