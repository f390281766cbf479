"""Cached backbone outputs as model input: the torch side of ``train.source: features``.

The ``features`` stage stores, per split and video, ``V`` views of the frozen backbone's outputs
(:mod:`madapter.data.features.feature_store`).  This module reads them for training and evaluation:

* :class:`FeatureDataset`: items ``(levels, pooled, label)``, what
  :meth:`madapter.models.classifier.VideoClassifier.extract` would give for one clip.
  **Training** item ``i`` at epoch ``e`` (0-based) is stored view ``e % V``: the train split's
  view ``v`` is exactly the clip ``ClipDataset(train=True)`` draws at epoch ``v``, so for the
  first ``V`` epochs training on features sees the very clips training on frames sees, and later
  epochs cycle through them again (a per-item permutation would reorder them but add no new
  clip).  **Validation** is one view per video, like the frames path's per-epoch validation:
  the central one (:func:`central_view`, the centred clip and centre crop of the protocol's
  ``clips x crops`` views; view 0 for ``1x1``).  Evaluation averages all views (:mod:`madapter.evaluate`).
* :func:`collate_features`: a batch as ``((levels, pooled), labels)``, model inputs first, so the
  training step calls ``forward(*inputs)`` whatever the source.
* :func:`check_features_match` / :func:`check_protocol_views`: the features must be the outputs
  of the backbone ``params.model`` describes, with the evaluation protocol's views; otherwise one
  line saying to re-run the ``features`` stage (missing features: ``read_features_meta``'s line).

Which split validation and evaluation read is the index's decision
(:func:`madapter.data.index.schema.eval_split`), the same for frames and features.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from madapter.config import ConfigError, Params
from madapter.data.features.feature_store import FEATURES_META, FeatureStore, cache_key
from madapter.data.store.frame_store import store_digest
from madapter.fileio import file_digest
from madapter.models.backbone import LevelInfo

MATCH_KEYS = ("backbone", "pretrained", "weights_file", "init_seed", "img_size", "levels", "level_pool",
              "num_frames", "half_precision", "tuning")
"""``model`` keys that change the backbone's outputs (or which of them are stored, or how they are
pooled: ``level_pool``): they must be the ones the features were computed with.  The head's own
keys (width, fusion, ...) are free."""

LEVEL_KEYS = ("levels", "level_pool", "tuning")
"""The :data:`MATCH_KEYS` that decide which levels are stored and how they are pooled.  A head that
reads no levels (``linear``) needs only the pooled output, which every frozen-mode cache holds, so
for it these keys are free: the demo's order-blind baseline trains on the ``madapter`` features."""

RERUN = "re-run the features stage (dvc repro, or python -m madapter features)"


def central_view(clips: int, crops: int) -> int:
    """Index of the central view among ``clips x crops`` clip-major views (the centred clip's centre crop)."""
    return (clips // 2) * crops + crops // 2


class FeatureDataset(Dataset):
    """A :class:`FeatureStore` split as head input: items ``(levels [T,h,w,C] per level, pooled [T,D], label)``.

    ``train=True``: stored view ``epoch % views`` (:meth:`set_epoch`); else view ``view`` of every
    video, or with ``view=None`` all of them (a leading ``[V]`` axis: evaluation).
    ``with_levels=False`` (the ``linear`` head, whose features store no levels) returns none.
    Tensors are float32 whatever the stored dtype.
    """

    def __init__(self, store: FeatureStore, train: bool, view: int | None = 0, with_levels: bool = True) -> None:
        if view is not None and not 0 <= view < store.views:
            raise ValueError(f"view {view} out of range: {store.views} views stored per video")
        self.store, self.train, self.view, self.with_levels = store, train, view, with_levels
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch (0-based) whose stored views training items come from."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.store)

    @property
    def current_view(self) -> int | None:
        """The stored view every item reads now (training: the epoch's; else the fixed one; ``None``: all)."""
        return self.epoch % self.store.views if self.train else self.view

    def __getitem__(self, index: int) -> tuple[list[torch.Tensor], torch.Tensor, int]:
        view = self.current_view
        levels, pooled, label = self.store.all_views(index) if view is None else self.store.view(index, view)
        grids = [_float_tensor(level) for level in levels] if self.with_levels else []
        return grids, _float_tensor(pooled), int(label)


def _float_tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(array, dtype=np.float32))  # the store's view is a fresh array already


def collate_features(items: list[tuple[list[torch.Tensor], torch.Tensor, int]]):
    """``((levels [B,T,h,w,C] per level, pooled [B,T,D]), labels [B])``: inputs first, then targets
    (all-view items: ``[B,V,T,...]``)."""
    levels = [torch.stack(per_level) for per_level in zip(*(item[0] for item in items), strict=True)]
    pooled = torch.stack([item[1] for item in items])
    labels = torch.tensor([item[2] for item in items], dtype=torch.int64)
    return (levels, pooled), labels


def level_infos(store: FeatureStore) -> list[LevelInfo]:
    """What the head needs of the stored levels: block index and channels."""
    return [LevelInfo(spec.index, spec.channels) for spec in store.levels]


def features_digest(root: Path) -> str:
    """sha256 of ``features.json``: what training fingerprints as "the data" on features."""
    return file_digest(Path(root) / FEATURES_META)


CACHE_KEY_PARAMS = {
    "seed": "base.seed", "decode": "decode (backend, frames_per_video, size)", "frame_store": "the frame store",
    "views": "features.train_views / evaluate.clips / evaluate.crops",
    "dtype": "features.dtype", "use_gpu": "features.use_gpu",
}
"""The rest of ``features.json``'s cache key (:func:`~madapter.data.features.feature_store.cache_key`): the
params each entry comes from.  Its backbone entries are :data:`MATCH_KEYS`' business."""


def check_features_match(params: Params, meta: dict[str, Any], root: Path, frames: Path | None = None) -> None:
    """One-line :class:`ConfigError` naming the first param the features were not computed with.

    First the ``model`` keys (:data:`MATCH_KEYS`), then the rest of the stage's cache key,
    recomputed from ``params``; the frame store's digest only where a frame store is present at
    ``frames`` (``None``: no frame store to compare, as when the features were pulled alone).
    """
    where = Path(root) / FEATURES_META
    stored, current = meta.get("model_cfg", {}), params.model.model_dump(mode="json")
    free = LEVEL_KEYS if current["tuning"] == "linear" else ()
    for key in MATCH_KEYS:
        if key not in free and stored.get(key) != current[key]:
            raise ConfigError(f"{where}: model.{key} is {current[key]!r} but the features were computed "
                              f"with {stored.get(key)!r}; {RERUN}")
    stored_key = meta.get("cache_key", {})
    current_key = cache_key(params, meta["backbone"], store_digest(frames) if frames is not None else "")
    for key, names in CACHE_KEY_PARAMS.items():
        if key == "frame_store" and not current_key[key]:
            continue  # no frame store here (features pulled alone): nothing to compare
        if key in stored_key and stored_key[key] != current_key.get(key):
            raise ConfigError(f"{where}: {names} changed since the features were computed ({key} was "
                              f"{stored_key[key]!r}, now {current_key.get(key)!r}); {RERUN}")


def check_protocol_views(store: FeatureStore, root: Path, split: str, clips: int, crops: int) -> None:
    """A val/test split must hold the evaluation protocol's ``clips x crops`` views per video."""
    if store.views != clips * crops:
        raise ConfigError(
            f"{Path(root) / split}: the features hold {store.views} views per video but evaluate.clips x "
            f"evaluate.crops is {clips * crops}; {RERUN}"
        )
