"""The decoded frame store: its format, its one writer and its one reader.

The decode stage fills it through :class:`ShardWriter` and :func:`write_store_meta`; training,
evaluation, the features stage and the callers of :func:`store_digest` read it through
:class:`FrameStore` and :func:`read_store_meta`.  Which split stands for ``val`` is not the
store's business: the index records it (:func:`madapter.data.index.schema.eval_split`).  A few
large shards per split, never one file per frame: DVC (and most file systems) crawl on millions
of small jpgs; a shard of a few hundred videos hashes, copies and memory-maps in one go.  Layout::

    <root>/store.json                    classes, frames_per_video, size, format, codec, counts, bytes
                                         (no timings: DVC hashes it, training fingerprints it; see
                                         madapter/data/timing.py)
    <root>/<split>/manifest.csv          path,label,label_name,shard,offset,num_source_frames
    format: jpeg (decode.format, the default)
    <root>/<split>/shard-00000.jpg.bin   the shard's frames as JPEG streams back to back, video-major
    <root>/<split>/shard-00000.idx.npy   int64 [n, F, 3]: byte offset, length and CRC-32 of each frame
    format: raw
    <root>/<split>/shard-00000.npy       uint8 [n, F, S, S, 3]

A split whose videos are exactly another split's (SSv2's and Kinetics-700's ``test``, which the
index fills with the labelled ``val`` rows) is stored ONCE: it has no directory of its own and
``store.json`` says ``"splits": {"test": {..., "same_as": "val"}}``; :class:`FrameStore` and
:func:`has_split` resolve it (:func:`stored_split`), so every reader -- training, evaluation, the
features stage -- gets val's shards for test without knowing.

``offset`` in the manifest is the video's position in its shard.  A JPEG store is ~1/10 of the raw
bytes and decodes only the frames a clip needs (:meth:`FrameStore.frames`); the raw store is the
uncompressed reference (numbers: docs/benchmarks.md, "Frame store").  Each frame's CRC-32 is
checked before decoding: a flipped byte is a :class:`StoreError` naming the shard, never a frame
of garbage fed to training.

Readers memory-map shards lazily, so a :class:`FrameStore` is cheap to create and to send to
DataLoader / Ray workers (the open maps are dropped when pickled and re-opened on first use).
"""

from __future__ import annotations

import csv
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from madapter.data.mmap_pickle import LazyMapsPickle
from madapter.data.store.codec import CodecError, JpegCodec
from madapter.fileio import CSV_ENCODING, atomic_open, file_digest, write_json_atomic

if TYPE_CHECKING:
    from madapter.config import DecodeSection

MANIFEST_FIELDS = ("path", "label", "label_name", "shard", "offset", "num_source_frames")
STORE_META = "store.json"
MANIFEST_FILE = "manifest.csv"
FORMATS = ("jpeg", "raw")
RERUN = "re-run the decode stage (python -m madapter decode, or dvc repro -f decode)"
_INDEX_COLUMNS = 3  # offset, length, crc32


class StoreError(ValueError):
    """A frame store file that cannot be read; the message names the file and the fix."""


def shard_name(shard: int) -> str:
    """The raw format's shard file."""
    return f"shard-{shard:05d}.npy"


def jpeg_shard_names(shard: int) -> tuple[str, str]:
    """The JPEG format's shard files: the concatenated frames and their index."""
    return f"shard-{shard:05d}.jpg.bin", f"shard-{shard:05d}.idx.npy"


def frame_codec(cfg: DecodeSection) -> JpegCodec | None:
    """The codec ``decode.format`` / ``decode.quality`` ask for (``None``: raw uint8)."""
    return JpegCodec(cfg.quality) if cfg.format == "jpeg" else None


def format_meta(cfg: DecodeSection) -> dict[str, Any]:
    """The ``store.json`` keys that say how frames are stored (what :class:`FrameStore` reads back)."""
    codec = frame_codec(cfg)
    return {"format": cfg.format, "codec": codec.describe() if codec else None}


@dataclass(frozen=True)
class SplitSummary:
    videos: int
    shards: int
    bytes: int


class ShardWriter:
    """Collect fixed-shape frame arrays and write them as shards plus a manifest.

    ``codec=None`` writes raw uint8 ``.npy`` shards; a :class:`JpegCodec` writes each frame as a
    JPEG stream.  Each shard file and the manifest are written atomically
    (:mod:`madapter.fileio`), so a crash never leaves a truncated shard that a later reader would
    trust; the bytes are a function of the frames and the codec only.
    """

    def __init__(self, split_dir: Path, shard_size: int, frames_per_video: int, size: int,
                 codec: JpegCodec | None = None) -> None:
        self.split_dir = Path(split_dir)
        self.split_dir.mkdir(parents=True, exist_ok=True)
        self.shape = (frames_per_video, size, size, 3)
        self.shard_size = shard_size
        self.codec = codec
        self._buffer = np.empty((shard_size if codec is None else 0, *self.shape), dtype=np.uint8)
        self._encoded: list[list[bytes]] = []  # jpeg: per video of the open shard, its frames' bytes
        self._fill = 0
        self._shard = 0
        self._rows: list[dict[str, Any]] = []
        self._bytes = 0

    def add(self, path: str, label: int, label_name: str, frames: np.ndarray, num_source_frames: int) -> None:
        if frames.shape != self.shape or frames.dtype != np.uint8:
            raise ValueError(f"{path}: frames are {frames.dtype}{list(frames.shape)}, the store needs uint8{list(self.shape)}")
        if self.codec is None:
            self._buffer[self._fill] = frames
        else:
            self._encoded.append([self.codec.encode(frame) for frame in frames])
        self._rows.append({"path": path, "label": int(label), "label_name": label_name, "shard": self._shard,
                           "offset": self._fill, "num_source_frames": int(num_source_frames)})
        self._fill += 1
        if self._fill == self.shard_size:
            self._flush()

    def _flush(self) -> None:
        if self._fill == 0:
            return
        if self.codec is None:
            target = self.split_dir / shard_name(self._shard)
            with atomic_open(target, "wb") as fh:
                np.save(fh, self._buffer[: self._fill])
            self._bytes += target.stat().st_size
        else:
            self._bytes += self._write_jpeg_shard()
        self._shard += 1
        self._fill = 0

    def _write_jpeg_shard(self) -> int:
        """The open shard's frames back to back, then their index (offset, length, CRC-32); bytes written."""
        data_name, index_name = jpeg_shard_names(self._shard)
        index = np.zeros((len(self._encoded), self.shape[0], _INDEX_COLUMNS), dtype=np.int64)
        position = 0
        with atomic_open(self.split_dir / data_name, "wb") as fh:
            for v, video in enumerate(self._encoded):
                for f, record in enumerate(video):
                    index[v, f] = (position, len(record), zlib.crc32(record))
                    fh.write(record)
                    position += len(record)
        with atomic_open(self.split_dir / index_name, "wb") as fh:
            np.save(fh, index)
        self._encoded = []
        return position + (self.split_dir / index_name).stat().st_size

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
    """``<root>/store.json``: classes, frame grid, format, counts and bytes per split."""
    meta = Path(root) / STORE_META
    if not meta.is_file():
        raise FileNotFoundError(f"{meta}: frame store metadata not found; run the decode stage first")
    return json.loads(meta.read_text())


SAME_AS = "same_as"
"""``store.json`` ``splits.<split>.same_as``: the split whose directory holds this split's videos."""


def split_directory(meta: dict[str, Any], split: str) -> str:
    """The directory (below the store root) holding ``split``'s manifest and shards, from ``store.json``:
    ``split`` itself, or the split it repeats (``same_as``)."""
    return str(((meta.get("splits") or {}).get(split) or {}).get(SAME_AS) or split)


def stored_split(root: Path, split: str) -> str:
    """:func:`split_directory` of the store at ``root`` (``split`` itself when there is no ``store.json``)."""
    meta = Path(root) / STORE_META
    return split_directory(json.loads(meta.read_text()), split) if meta.is_file() else split


def has_split(root: Path, split: str) -> bool:
    """Whether the store at ``root`` holds ``split``: its manifest (possibly empty) exists, or the manifest of
    the split it repeats."""
    return (Path(root) / stored_split(root, split) / MANIFEST_FILE).is_file()


def store_digest(root: Path) -> str:
    """sha256 of ``store.json`` (classes, grid, format, counts and bytes of every split); ``""`` if absent.

    What training fingerprints as "the data": cheap, and it changes whenever decode's output does
    in shape, format or size.
    """
    meta = Path(root) / STORE_META
    return file_digest(meta) if meta.is_file() else ""


class FrameStore(LazyMapsPickle):
    """Random access to one split of a decoded frame store, whatever its format.

    ``store[i] -> (uint8 [F, S, S, 3], label)``; ``store.frames(i, indices)`` decodes only the
    frames a clip needs; ``store.classes``, ``store.labels``, ``store.paths``.  Nothing is opened
    until a frame is read.
    """

    def __init__(self, root: Path, split: str) -> None:
        self.root, self.split = Path(root), split
        meta = read_store_meta(self.root)
        self.split_dir = self.root / split_directory(meta, split)  # a repeated split reads the one it repeats
        manifest = self.split_dir / MANIFEST_FILE
        if not manifest.is_file():
            raise FileNotFoundError(f"{manifest}: split '{split}' not in the frame store; run the decode stage")
        self.format: str = meta.get("format", "raw")  # stores written before formats existed are raw
        if self.format not in FORMATS:
            raise StoreError(f"{self.root / STORE_META}: format {self.format!r} is not one this code reads "
                             f"({', '.join(FORMATS)}); {RERUN}")
        self.classes: list[str] = list(meta["classes"])
        self.frames_per_video: int = int(meta["frames_per_video"])
        self.size: int = int(meta["size"])
        self._codec = JpegCodec(int((meta.get("codec") or {}).get("quality", 90))) if self.format == "jpeg" else None
        with open(manifest, **CSV_ENCODING) as fh:
            rows = list(csv.DictReader(fh))
        self.paths: list[str] = [r["path"] for r in rows]
        self.label_names: list[str] = [r["label_name"] for r in rows]
        self.labels = np.array([int(r["label"]) for r in rows], dtype=np.int64)
        self.num_source_frames = np.array([int(r["num_source_frames"]) for r in rows], dtype=np.int64)
        self._shard = np.array([int(r["shard"]) for r in rows], dtype=np.int64)
        self._offset = np.array([int(r["offset"]) for r in rows], dtype=np.int64)
        self._maps: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def _raw_shard(self, shard: int) -> np.ndarray:
        if shard not in self._maps:
            path = self.split_dir / shard_name(shard)
            try:
                self._maps[shard] = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as err:  # truncated or damaged: numpy's message names no file
                raise StoreError(f"{path}: cannot read this frame shard; {RERUN} ({err})") from err
        return self._maps[shard]

    def _jpeg_shard(self, shard: int) -> tuple[np.ndarray, np.ndarray]:
        """The shard's bytes (memory-mapped) and its index, checked against each other once."""
        if shard not in self._maps:
            data_name, index_name = jpeg_shard_names(shard)
            data_path, index_path = self.split_dir / data_name, self.split_dir / index_name
            try:
                index = np.load(index_path)
            except (OSError, ValueError, EOFError) as err:
                raise StoreError(f"{index_path}: cannot read this frame shard index; {RERUN} ({err})") from None
            if index.ndim != 3 or index.shape[1:] != (self.frames_per_video, _INDEX_COLUMNS) or index.dtype != np.int64:
                raise StoreError(f"{index_path}: index is {index.dtype}{list(index.shape)}, expected int64"
                                 f"[n, {self.frames_per_video}, {_INDEX_COLUMNS}]; {RERUN}")
            try:
                data = np.memmap(data_path, dtype=np.uint8, mode="r")
            except (OSError, ValueError) as err:
                raise StoreError(f"{data_path}: cannot read this frame shard; {RERUN} ({err})") from None
            end = int((index[..., 0] + index[..., 1]).max()) if index.size else 0
            if end != data.size:
                raise StoreError(f"{data_path}: {data.size} bytes but its index says {end} (truncated or "
                                 f"damaged); {RERUN}")
            self._maps[shard] = (data, index)
        return self._maps[shard]

    def frames(self, index: int, indices: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """uint8 ``[len(indices), S, S, 3]``: frames ``indices`` of video ``index`` (all by default).

        A JPEG store decodes only these frames, so a training clip of ``model.num_frames`` out of
        ``decode.frames_per_video`` stored frames costs only its own frames.
        """
        i = range(len(self))[index]  # IndexError on bad indices, negative indices allowed
        shard, position = int(self._shard[i]), int(self._offset[i])
        picks = np.arange(self.frames_per_video) if indices is None else np.asarray(indices, dtype=np.int64)
        if self._codec is None:
            video = self._raw_shard(shard)[position]
            return np.array(video) if indices is None else np.asarray(video[picks])  # fancy indexing copies
        data, table = self._jpeg_shard(shard)
        out = np.empty((len(picks), self.size, self.size, 3), dtype=np.uint8)
        for k, frame in enumerate(picks.tolist()):
            start, length, crc = (int(v) for v in table[position, frame])
            record = data[start : start + length]
            if zlib.crc32(record) != crc:
                raise StoreError(f"{self.split_dir / jpeg_shard_names(shard)[0]}: frame {frame} of {self.paths[i]} "
                                 f"is damaged (checksum mismatch); {RERUN}")
            try:
                self._codec.decode_into(record, out[k])
            except CodecError as err:
                raise StoreError(f"{self.split_dir / jpeg_shard_names(shard)[0]}: frame {frame} of {self.paths[i]} "
                                 f"cannot be decoded; {RERUN} ({err})") from None
        return out

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        i = range(len(self))[index]  # IndexError on bad indices, negative indices allowed
        return self.frames(i), int(self.labels[i])

    def __repr__(self) -> str:
        return (f"FrameStore({str(self.root)!r}, split={self.split!r}: {len(self)} videos, "
                f"{len(self.classes)} classes, [{self.frames_per_video},{self.size},{self.size},3] {self.format})")
