"""The decoded frame store: its format, its one writer and its one reader.

The decode stage fills it through :class:`ShardWriter` and :func:`write_store_meta`; training,
evaluation and the callers of :func:`split_or_test` / :func:`store_digest` read it through
:class:`FrameStore` and :func:`read_store_meta`.  A few large ``.npy`` shards per split, never one
file per frame: DVC (and most file systems) crawl on millions of small jpgs; a shard of a few
hundred videos hashes, copies and memory-maps in one go.  Layout::

    <root>/store.json                 classes, frames_per_video, size, counts, bytes (no timings:
                                      DVC hashes it, training fingerprints it; see
                                      madapter/data/timing.py)
    <root>/<split>/shard-00000.npy    uint8 [n, F, S, S, 3]
    <root>/<split>/manifest.csv       path,label,label_name,shard,offset,num_source_frames

Readers memory-map shards lazily, so a :class:`FrameStore` is cheap to create and to send to
DataLoader / Ray workers (the open maps are dropped when pickled and re-opened on first use).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from madapter.data.mmap_pickle import LazyMapsPickle
from madapter.fileio import CSV_ENCODING, atomic_open, file_digest, write_json_atomic

MANIFEST_FIELDS = ("path", "label", "label_name", "shard", "offset", "num_source_frames")
STORE_META = "store.json"
MANIFEST_FILE = "manifest.csv"


class StoreError(ValueError):
    """A frame store file that cannot be read; the message names the file and the fix."""


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}.npy"


@dataclass(frozen=True)
class SplitSummary:
    videos: int
    shards: int
    bytes: int


class ShardWriter:
    """Collect fixed-shape frame arrays and write them as shards plus a manifest.

    Each shard and the manifest are written atomically (:mod:`madapter.fileio`), so a crash never
    leaves a truncated ``.npy`` that a later reader would trust.
    """

    def __init__(self, split_dir: Path, shard_size: int, frames_per_video: int, size: int) -> None:
        self.split_dir = Path(split_dir)
        self.split_dir.mkdir(parents=True, exist_ok=True)
        self.shape = (frames_per_video, size, size, 3)
        self.shard_size = shard_size
        self._buffer = np.empty((shard_size, *self.shape), dtype=np.uint8)
        self._fill = 0
        self._shard = 0
        self._rows: list[dict[str, Any]] = []
        self._bytes = 0

    def add(self, path: str, label: int, label_name: str, frames: np.ndarray, num_source_frames: int) -> None:
        if frames.shape != self.shape or frames.dtype != np.uint8:
            raise ValueError(f"{path}: frames are {frames.dtype}{list(frames.shape)}, the store needs uint8{list(self.shape)}")
        self._buffer[self._fill] = frames
        self._rows.append({"path": path, "label": int(label), "label_name": label_name, "shard": self._shard,
                           "offset": self._fill, "num_source_frames": int(num_source_frames)})
        self._fill += 1
        if self._fill == self.shard_size:
            self._flush()

    def _flush(self) -> None:
        if self._fill == 0:
            return
        target = self.split_dir / shard_name(self._shard)
        with atomic_open(target, "wb") as fh:
            np.save(fh, self._buffer[: self._fill])
        self._bytes += target.stat().st_size
        self._shard += 1
        self._fill = 0

    def close(self) -> SplitSummary:
        """Write the last shard and the manifest (header only for an empty split)."""
        self._flush()
        with atomic_open(self.split_dir / MANIFEST_FILE, "w", **CSV_ENCODING) as fh:
            writer = csv.DictWriter(fh, fieldnames=MANIFEST_FIELDS)
            writer.writeheader()
            writer.writerows(self._rows)
        return SplitSummary(videos=len(self._rows), shards=self._shard, bytes=self._bytes)


def write_store_meta(root: Path, meta: dict[str, Any]) -> Path:
    """Write ``<root>/store.json`` atomically; returns its path."""
    path = Path(root) / STORE_META
    write_json_atomic(path, meta)
    return path


def read_store_meta(root: Path) -> dict[str, Any]:
    """``<root>/store.json``: classes, frame grid, counts and bytes per split."""
    meta = Path(root) / STORE_META
    if not meta.is_file():
        raise FileNotFoundError(f"{meta}: frame store metadata not found; run the decode stage first")
    return json.loads(meta.read_text())


def has_split(root: Path, split: str) -> bool:
    """Whether the store at ``root`` holds ``split`` (its manifest exists, possibly empty)."""
    return (Path(root) / split / MANIFEST_FILE).is_file()


def split_or_test(root: Path, split: str) -> str:
    """``split``, unless it is ``val`` and the store has no val videos: then ``test``.

    Datasets such as UCF101 and HMDB51 have no val split; validating and evaluating on test is
    the convention there (the callers log that they did).
    """
    if split != "val":
        return split
    try:
        return "val" if len(FrameStore(root, "val")) > 0 else "test"
    except (FileNotFoundError, ValueError):
        return "test"


def store_digest(root: Path) -> str:
    """sha256 of ``store.json`` (classes, grid, counts and bytes of every split); ``""`` if absent.

    What training fingerprints as "the data": cheap, and it changes whenever decode's output does
    in shape or size.
    """
    meta = Path(root) / STORE_META
    return file_digest(meta) if meta.is_file() else ""


class FrameStore(LazyMapsPickle):
    """Random access to one split of a decoded frame store.

    ``store[i] -> (uint8 [F, S, S, 3], label)``; ``store.classes``, ``store.labels``, ``store.paths``.
    """

    def __init__(self, root: Path, split: str) -> None:
        self.root, self.split = Path(root), split
        self.split_dir = self.root / split
        meta = read_store_meta(self.root)
        manifest = self.split_dir / MANIFEST_FILE
        if not manifest.is_file():
            raise FileNotFoundError(f"{manifest}: split '{split}' not in the frame store; run the decode stage")
        self.classes: list[str] = list(meta["classes"])
        self.frames_per_video: int = int(meta["frames_per_video"])
        self.size: int = int(meta["size"])
        with open(manifest, **CSV_ENCODING) as fh:
            rows = list(csv.DictReader(fh))
        self.paths: list[str] = [r["path"] for r in rows]
        self.label_names: list[str] = [r["label_name"] for r in rows]
        self.labels = np.array([int(r["label"]) for r in rows], dtype=np.int64)
        self.num_source_frames = np.array([int(r["num_source_frames"]) for r in rows], dtype=np.int64)
        self._shard = np.array([int(r["shard"]) for r in rows], dtype=np.int64)
        self._offset = np.array([int(r["offset"]) for r in rows], dtype=np.int64)
        self._maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def _shard_array(self, shard: int) -> np.ndarray:
        if shard not in self._maps:
            path = self.split_dir / shard_name(shard)
            try:
                self._maps[shard] = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as err:  # truncated or damaged: numpy's message names no file
                raise StoreError(f"{path}: cannot read this frame shard ({err}); re-run the decode stage") from err
        return self._maps[shard]

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        i = range(len(self))[index]  # IndexError on bad indices, negative indices allowed
        frames = np.array(self._shard_array(int(self._shard[i]))[int(self._offset[i])])
        return frames, int(self.labels[i])

    def __repr__(self) -> str:
        return (f"FrameStore({str(self.root)!r}, split={self.split!r}: {len(self)} videos, "
                f"{len(self.classes)} classes, [{self.frames_per_video},{self.size},{self.size},3])")
