"""The stored backbone features: their format, their one writer and their one reader.

The features stage fills it through :class:`FeatureWriter` and :func:`write_features_meta`;
training and evaluation read it through :class:`FeatureStore` and :func:`read_features_meta`.
Layout::

    <root>/features.json                        format, backbone identity, level specs, views and
                                                counts per split, the cache key, where and in what
                                                precision the actors really ran the backbone
                                                (``computed_on``; no timings: DVC hashes it; see
                                                madapter/data/timing.py)
    <root>/<split>/level<k>-shard-00000.npy     [n_views, T, h_k, w_k, C_k]  (k = 0..L-1, in level order)
    <root>/<split>/pooled-shard-00000.npy       [n_views, T, D]
    <root>/<split>/manifest.csv                 path,label,label_name,shard,offset

Every video of a split has the same number of views (``features.json: splits.<split>.views``),
stored contiguously: video ``i``'s views are rows ``offset .. offset + views - 1`` of its shard
(a video never spans two shards).  ``level<k>`` files exist only when the backbone's levels are
used (``model.tuning: madapter``); ``linear`` stores the pooled feature only.  The level grids are
what the model's ``extract`` returns: pooled to at most ``model.level_pool`` squared when it is set
(the model pools, not the stage, so a model rebuilt from a checkpoint sees the same grids).  The
stored dtype is ``features.dtype``.

With ``train.source: frames`` the stage writes only ``features.json`` with ``"enabled": false``;
:func:`read_features_meta` refuses it with a line saying how to extract.  Readers memory-map
shards lazily, so a :class:`FeatureStore` is cheap to create and to send to DataLoader / Ray
workers (the open maps are dropped when pickled and re-opened on first use).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from madapter.config import ConfigError, Params
from madapter.data.mmap_pickle import LazyMapsPickle
from madapter.fileio import CSV_ENCODING, atomic_open, atomic_path, write_json_atomic

FORMAT = "madapter-features/1"
FEATURES_META = "features.json"
MANIFEST_FILE = "manifest.csv"
MANIFEST_FIELDS = ("path", "label", "label_name", "shard", "offset")
POOLED = "pooled"
RUN_HINT = "run the features stage (python -m madapter features)"


class FeaturesError(ConfigError):
    """Stored features that are missing, disabled or unreadable; one line naming the file and the fix."""


@dataclass(frozen=True)
class LevelSpec:
    """One stored level: the backbone block it was tapped at, its channels and its (pooled) token grid."""

    index: int
    channels: int
    grid: tuple[int, int]

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "channels": self.channels, "grid": list(self.grid)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LevelSpec:
        h, w = data["grid"]
        return cls(int(data["index"]), int(data["channels"]), (int(h), int(w)))


def level_name(k: int) -> str:
    """Array name of the ``k``-th stored level (position in ``features.json: levels``, not the block index)."""
    return f"level{k}"


def shard_name(array: str, shard: int) -> str:
    return f"{array}-shard-{shard:05d}.npy"


def cache_key(params: Params, backbone: dict[str, Any], frame_store_digest: str) -> dict[str, Any]:
    """Everything that decides the stored values, as ``features.json`` records it.

    ``backbone`` is :func:`madapter.models.checkpoint.describe_backbone` of the model;
    ``frame_store_digest`` is :func:`madapter.data.store.frame_store.store_digest` of the frame store.
    A reader compares this with the same call on its own params to tell stale features apart.
    """
    m, d, f = params.model, params.decode, params.features
    return {
        "backbone": backbone["name"],
        "weights_digest": backbone["weights_digest"],
        "levels": list(backbone["levels"]),
        "level_pool": m.level_pool,
        "tuning": m.tuning,
        "img_size": m.img_size,
        "num_frames": m.num_frames,
        "half_precision": m.half_precision,
        "use_gpu": f.use_gpu,
        "decode": {"backend": d.backend, "frames_per_video": d.frames_per_video, "size": d.size},
        "frame_store": frame_store_digest,
        "views": {"train": f.train_views, "clips": params.evaluate.clips, "crops": params.evaluate.crops},
        "seed": params.base.seed,
        "dtype": f.dtype,
    }


def computed_on_record(setups: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """``features.json: computed_on``: where and in what precision the backbone REALLY computed the
    stored values, from what every extraction actor reported for its batches (``(device, precision)``
    pairs, e.g. ``("cuda", "bf16")``).

    Not the cache key: ``features.use_gpu`` and ``model.half_precision`` say what was asked for; this
    says what ran, and it is what a run trained or evaluated on these features records for its
    backbone (:func:`backbone_computed_on`).  Actors that disagree (a cluster mixing GPUs with and
    without bf16, say) are recorded as such: ``actors_agree: false``, every distinct setup listed and
    the summary fields joined with ``+``.  Distinct setups only, never counts per actor: the file's
    bytes must not depend on ``features.actors`` (run control).
    """
    distinct = sorted(set(setups))
    actors = [{"device": device, "backbone_precision": precision} for device, precision in distinct]
    if not distinct:  # nothing to extract (every split empty): no actor ran
        return {"device": "none", "backbone_precision": "none", "actors_agree": True, "actors": []}
    return {"device": "+".join(sorted({a["device"] for a in actors})),
            "backbone_precision": "+".join(sorted({a["backbone_precision"] for a in actors})),
            "actors_agree": len(distinct) == 1, "actors": actors}


def backbone_computed_on(meta: dict[str, Any]) -> dict[str, str]:
    """``{"device", "backbone_precision"}`` of the extraction that wrote ``meta`` (``features.json``).

    A ``features.json`` written before extraction recorded it: CPU actors (``use_gpu: false`` in its
    cache key) ran fp32, always; of GPU actors nothing can be told (they may have fallen back to the
    CPU), so ``unknown``.
    """
    computed = meta.get("computed_on")
    if computed:
        return {"device": str(computed["device"]), "backbone_precision": str(computed["backbone_precision"])}
    if meta.get("cache_key", {}).get("use_gpu") is False:
        return {"device": "cpu", "backbone_precision": "fp32"}
    return {"device": "unknown", "backbone_precision": "unknown"}


def write_features_meta(root: Path, meta: dict[str, Any]) -> Path:
    """Write ``<root>/features.json`` atomically; returns its path."""
    path = Path(root) / FEATURES_META
    write_json_atomic(path, {"format": FORMAT, **meta})
    return path


def read_features_meta(root: Path) -> dict[str, Any]:
    """``<root>/features.json`` of extracted features; a :class:`FeaturesError` line when absent or disabled."""
    path = Path(root) / FEATURES_META
    if not path.is_file():
        raise FeaturesError(f"{path}: not found; {RUN_HINT}")
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise FeaturesError(f"{path}: unreadable ({err}); {RUN_HINT}") from None
    if meta.get("format") != FORMAT:
        raise FeaturesError(f"{path}: format {meta.get('format')!r}, this code reads {FORMAT!r}; {RUN_HINT}")
    if not meta.get("enabled", False):
        raise FeaturesError(f"{path}: no features were extracted (the stage ran with train.source: frames); "
                            f"set train.source: features and {RUN_HINT}")
    return meta


@dataclass(frozen=True)
class SplitSummary:
    videos: int
    views: int
    shards: int
    bytes: int


class FeatureWriter:
    """Write one split: every video's ``views`` views, level by level, into shards plus a manifest.

    The number of videos is known up front, so each shard is a ``.npy`` memory map of its final
    size filled in place (a ViT-B shard is gigabytes: it is never held in RAM) and renamed into
    place once full (:func:`madapter.fileio.atomic_path`): a crash never leaves a truncated shard
    that a reader would trust.
    """

    def __init__(self, split_dir: Path, levels: Sequence[LevelSpec], num_frames: int, pooled_dim: int,
                 dtype: str, views: int, videos: int, shard_size: int) -> None:
        self.split_dir = Path(split_dir)
        self.split_dir.mkdir(parents=True, exist_ok=True)
        self.dtype, self.views, self.videos = np.dtype(dtype), int(views), int(videos)
        self.shapes = {level_name(k): (num_frames, *spec.grid, spec.channels) for k, spec in enumerate(levels)}
        self.shapes[POOLED] = (num_frames, pooled_dim)
        self.videos_per_shard = max(1, shard_size // self.views)
        self._rows: list[dict[str, Any]] = []
        self._open: dict[str, np.memmap] = {}
        self._files = ExitStack()
        self._shard, self._fill, self._bytes = 0, 0, 0

    def _start_shard(self) -> None:
        first = self._shard * self.videos_per_shard
        n_views = min(self.videos_per_shard, self.videos - first) * self.views
        for array, shape in self.shapes.items():
            tmp = self._files.enter_context(atomic_path(self.split_dir / shard_name(array, self._shard)))
            self._open[array] = np.lib.format.open_memmap(tmp, mode="w+", dtype=self.dtype, shape=(n_views, *shape))

    def _finish_shard(self) -> None:
        for mm in self._open.values():
            mm.flush()
        self._open.clear()  # drop the maps before the files are renamed
        self._files.close()
        self._bytes += sum(os.path.getsize(self.split_dir / shard_name(a, self._shard)) for a in self.shapes)
        self._shard, self._fill = self._shard + 1, 0

    def add(self, path: str, label: int, label_name: str, levels: Sequence[np.ndarray], pooled: np.ndarray) -> None:
        """One video: ``levels[k]`` ``[views, T, h_k, w_k, C_k]`` and ``pooled`` ``[views, T, D]`` (cast to the dtype)."""
        arrays = {level_name(k): a for k, a in enumerate(levels)} | {POOLED: pooled}
        if len(self._rows) == self.videos:
            raise ValueError(f"{self.split_dir}: more than the {self.videos} videos announced")
        for array, value in arrays.items():
            want = (self.views, *self.shapes.get(array, ()))
            if array not in self.shapes or tuple(value.shape) != want:
                raise ValueError(f"{path}: {array} is {list(value.shape)}, the features need {list(want)}")
        if not self._open:
            self._start_shard()
        offset = self._fill * self.views
        for array, value in arrays.items():
            self._open[array][offset : offset + self.views] = value
        self._rows.append({"path": path, "label": int(label), "label_name": label_name, "shard": self._shard,
                           "offset": offset})
        self._fill += 1
        if self._fill == self.videos_per_shard or len(self._rows) == self.videos:
            self._finish_shard()

    def abort(self) -> None:
        """Drop the shard being filled (its temporary files are removed, nothing is renamed into place)."""
        self._open.clear()
        err = RuntimeError("feature writer aborted")
        self._files.__exit__(type(err), err, None)

    def close(self) -> SplitSummary:
        """Write the manifest (header only for an empty split); every announced video must have been added."""
        if len(self._rows) != self.videos:
            self.abort()
            raise ValueError(f"{self.split_dir}: {len(self._rows)} videos written of the {self.videos} announced")
        with atomic_open(self.split_dir / MANIFEST_FILE, "w", **CSV_ENCODING) as fh:
            writer = csv.DictWriter(fh, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(self._rows)
        return SplitSummary(videos=len(self._rows), views=len(self._rows) * self.views, shards=self._shard,
                            bytes=self._bytes)


class FeatureStore(LazyMapsPickle):
    """Random access to one split of the stored features.

    ``store.view(i, v)`` -> (per-level ``[T, h, w, C]``, pooled ``[T, D]``, label) in the stored
    dtype; ``store.all_views(i)`` the same with a leading ``[views]`` axis.
    """

    def __init__(self, root: Path, split: str) -> None:
        self.root, self.split = Path(root), split
        self.split_dir = self.root / split
        self.meta: dict[str, Any] = read_features_meta(self.root)
        manifest = self.split_dir / MANIFEST_FILE
        if not manifest.is_file() or split not in self.meta.get("splits", {}):
            raise FeaturesError(f"{manifest}: split '{split}' not in the stored features; {RUN_HINT}")
        self.classes: list[str] = list(self.meta["classes"])
        self.num_frames: int = int(self.meta["num_frames"])
        self.levels: list[LevelSpec] = [LevelSpec.from_json(spec) for spec in self.meta["levels"]]
        self.pooled_dim: int = int(self.meta["pooled_dim"])
        self.dtype = np.dtype(self.meta["dtype"])
        self.views: int = int(self.meta["splits"][split]["views"])
        with open(manifest, **CSV_ENCODING) as fh:
            rows = list(csv.DictReader(fh))
        self.paths: list[str] = [r["path"] for r in rows]
        self.label_names: list[str] = [r["label_name"] for r in rows]
        self.labels = np.array([int(r["label"]) for r in rows], dtype=np.int64)
        self._shard = np.array([int(r["shard"]) for r in rows], dtype=np.int64)
        self._offset = np.array([int(r["offset"]) for r in rows], dtype=np.int64)
        self._maps: dict[tuple[str, int], np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def _array(self, array: str, shard: int) -> np.ndarray:
        key = (array, shard)
        if key not in self._maps:
            path = self.split_dir / shard_name(array, shard)
            try:
                self._maps[key] = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as err:  # missing, truncated or damaged: numpy's message names no file
                raise FeaturesError(f"{path}: cannot read this feature shard ({err}); {RUN_HINT}") from err
        return self._maps[key]

    def _rows(self, index: int, rows: slice | int) -> tuple[list[np.ndarray], np.ndarray, int]:
        i = range(len(self))[index]  # IndexError on bad indices, negative indices allowed
        shard, first = int(self._shard[i]), int(self._offset[i])
        pick = first + rows if isinstance(rows, int) else slice(first + rows.start, first + rows.stop)
        levels = [np.array(self._array(level_name(k), shard)[pick]) for k in range(len(self.levels))]
        return levels, np.array(self._array(POOLED, shard)[pick]), int(self.labels[i])

    def view(self, index: int, view: int) -> tuple[list[np.ndarray], np.ndarray, int]:
        """View ``view`` of video ``index``: per-level ``[T, h, w, C]``, pooled ``[T, D]``, label."""
        if not 0 <= view < self.views:
            raise IndexError(f"view {view} out of range: {self.split} stores {self.views} views per video")
        return self._rows(index, view)

    def all_views(self, index: int) -> tuple[list[np.ndarray], np.ndarray, int]:
        """Every view of video ``index``: per-level ``[V, T, h, w, C]``, pooled ``[V, T, D]``, label."""
        return self._rows(index, slice(0, self.views))

    def __repr__(self) -> str:
        return (f"FeatureStore({str(self.root)!r}, split={self.split!r}: {len(self)} videos x {self.views} views, "
                f"{len(self.levels)} levels, pooled {self.pooled_dim}, {self.dtype})")
