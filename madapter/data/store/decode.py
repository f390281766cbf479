"""Decode stage: indexed videos -> the sharded frame store training reads.

It reads the index (:mod:`madapter.data.index.schema`) and the scan's quarantine list
(:mod:`madapter.data.store.quarantine`), never the scan stage itself, and writes the store through
its format's writers (:mod:`madapter.data.store.frame_store`); what it owns is how a video becomes
stored frames.

Every usable video (index minus the scan's quarantine) is decoded ONCE to
``decode.frames_per_video`` frames on a fixed uniform grid (segment centres, so the grid covers the
whole video or its ``start``/``end`` segment), resized so the short side is ``decode.size`` and
centre-cropped square.  Training then samples ``model.num_frames`` of those per clip with random
TSN offsets -- cheap, because the store is a few memory-mapped shards instead of video files.  A
split whose rows are exactly an earlier split's (the index's withheld-test copy of val: SSv2,
Kinetics-700) is not decoded again: ``store.json`` records it as ``same_as`` that split and the
store's reader resolves it (:mod:`madapter.data.store.frame_store`).

Videos decode in parallel worker processes (each opens its own readers); results are written in
index order, so the store is a deterministic function of the inputs: the same index, videos and
settings give the same bytes whatever ``decode.workers`` is.  With ``RAY_ADDRESS`` set, videos
decode in Ray tasks spread over the cluster's nodes instead (batches of frames come back through
Ray's object store, a bounded number in flight; ``data/raw`` must be on a filesystem every node
sees, and only this driver writes the store): the same bytes again
(:mod:`madapter.data.store.ray_pool`).  DVC hashes the store and training's
fingerprint hashes ``store.json``, so nothing in it may vary from run to run -- no timings, no worker
count, no absolute paths; the run's duration goes to ``outputs/timings/decode.json``
(:mod:`madapter.data.timing`).  The store is built in a temporary directory and swapped in at the
end: a failed run leaves the previous store intact.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from madapter.config import DecodeSection, Params
from madapter.data.index.schema import SPLITS, Row, read_classes, read_index
from madapter.data.sampling import segment_bounds, uniform_grid
from madapter.data.store.frame_store import SAME_AS, ShardWriter, format_meta, frame_codec, write_store_meta
from madapter.data.store.quarantine import QUARANTINE_FILE, read_quarantine
from madapter.data.store.ray_pool import NodeTally, connect, ordered_map, ray_requested
from madapter.data.timing import write_timing
from madapter.data.transforms import resize_and_center_crop
from madapter.data.video import Backend, VideoError, display_path, read_frames, relative_reason
from madapter.paths import StagePaths

logger = logging.getLogger(__name__)

RUN_CONTROL_KEYS = frozenset({"workers"})
"""``decode`` keys that change how fast the stage runs, never what it writes (not DVC params)."""


@dataclass(frozen=True)
class DecodeJob:
    abs_path: str
    row: Row


@dataclass(frozen=True)
class Decoded:
    job: DecodeJob
    frames: np.ndarray | None
    num_source_frames: int = 0
    backend: str = ""
    error: str = ""
    took_whole: bool = False
    """The row has ``start``/``end`` but the video is no longer than that segment, so the grid spans the
    whole video (:func:`madapter.data.sampling.segment_bounds`): an already-trimmed clip."""


def grid_indices(num_frames: int, fps: float, count: int, start: float | None, end: float | None) -> np.ndarray:
    """``count`` segment-centre indices over the whole video, or over ``[start, end)`` seconds."""
    first, stop = segment_bounds(num_frames, fps, start, end)
    return first + uniform_grid(stop - first, count)


def decode_video(job: DecodeJob, frames_per_video: int, size: int, backend: Backend) -> Decoded:
    """Decode one video to uint8 ``[F, size, size, 3]``; a failure is returned, not raised."""
    row = job.row
    took_whole = False

    def choose(num_frames: int, fps: float) -> np.ndarray:
        nonlocal took_whole
        segment = row.start is not None or row.end is not None
        took_whole = segment and segment_bounds(num_frames, fps, row.start, row.end) == (0, num_frames)
        return grid_indices(num_frames, fps, frames_per_video, row.start, row.end)

    try:
        result = read_frames(Path(job.abs_path), choose, backend)
        frames = resize_and_center_crop(result.frames, size)
    except (VideoError, ValueError, RuntimeError) as err:
        return Decoded(job, None, error=relative_reason(err, Path(job.abs_path), row.path))
    return Decoded(job, frames, result.num_frames, result.backend, took_whole=took_whole)


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # one core per worker process (or Ray task); the machine is shared


def _decode_star(args: tuple[DecodeJob, int, int, Backend]) -> Decoded:
    return decode_video(*args)


def _decode_batch(batch: list[tuple[DecodeJob, int, int, Backend]]) -> list[Decoded]:
    """One Ray task's work: a few videos, so their frames travel through the object store together."""
    _init_worker()
    return [_decode_star(args) for args in batch]


RAY_BATCH_BYTES = 32 * 2**20
"""Decoded frames per Ray task at most (a batch is one object in Ray's object store)."""


@dataclass(frozen=True)
class RayWorkers:
    """The stage's Ray cluster (``RAY_ADDRESS``): videos decode in Ray tasks over its nodes."""

    cpus: int
    tally: NodeTally


DecodePool = ProcessPoolExecutor | RayWorkers | None


@contextmanager
def worker_pool(workers: int, params: Params) -> Iterator[DecodePool]:
    """Where the stage's videos decode: the Ray cluster of ``RAY_ADDRESS`` when it is set
    (every CPU of the cluster takes tasks; ``workers`` only while it has none yet), else one process pool for
    the whole stage (spawned once: starting workers costs seconds), or inline for ``workers == 1``."""
    if ray_requested():
        cluster = connect(params, "decode", workers)
        ray_workers = RayWorkers(cluster.cpus, NodeTally())
        yield ray_workers
        logger.info("decode on Ray: %s", ray_workers.tally.summary())
        return
    if workers == 1:
        yield None
        return
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker) as pool:
        yield pool


def _decode_on_ray(tasks: list[tuple[DecodeJob, int, int, Backend]], frames_per_video: int, size: int,
                   pool: RayWorkers) -> Iterator[Decoded]:
    """Batches of videos as Ray tasks, results in job order, ``2 x CPUs`` tasks in flight at most:
    enough to keep every CPU busy while the driver writes, never the whole dataset in memory.
    Batches are at most :data:`RAY_BATCH_BYTES` and small enough that a split spreads over
    ``4 x CPUs`` tasks (a small split still reaches every node)."""
    per_video = frames_per_video * size * size * 3
    batch = max(1, min(RAY_BATCH_BYTES // per_video, math.ceil(len(tasks) / (4 * pool.cpus))))
    batches = (tasks[i:i + batch] for i in range(0, len(tasks), batch))
    for decoded in ordered_map(_decode_batch, batches, 2 * pool.cpus, pool.tally):
        yield from decoded


def decode_all(jobs: list[DecodeJob], frames_per_video: int, size: int, backend: Backend,
               pool: DecodePool, desc: str) -> Iterator[Decoded]:
    """Decoded videos in job order, from Ray tasks, the pool's processes, or inline without a pool."""
    tasks = [(job, frames_per_video, size, backend) for job in jobs]
    results: Iterable[Decoded]
    if isinstance(pool, RayWorkers):
        results = _decode_on_ray(tasks, frames_per_video, size, pool)
    elif pool is None:
        results = map(_decode_star, tasks)
    else:
        results = pool.map(_decode_star, tasks, chunksize=4)
    yield from tqdm(results, total=len(jobs), desc=desc, unit="video", leave=False, disable=None)


def repeated_split(rows: list[Row], decoded: dict[str, list[Row]]) -> str | None:
    """The already-decoded split whose rows are exactly ``rows`` (same videos, labels, segments, order), if any.

    The index fills a test split whose labels are withheld with the val rows (``test_from: "val"``
    in ``index_report.json``: SSv2, Kinetics-700); decoding them again would store identical
    shards twice (decode is deterministic) and make the features stage extract them twice.
    Comparing the rows rather than trusting the report keeps that safe if the two ever differ.
    """
    if not rows:
        return None
    key = [(r.path, r.label, r.label_name, r.start, r.end) for r in rows]
    for split, earlier in decoded.items():
        if [(r.path, r.label, r.label_name, r.start, r.end) for r in earlier] == key:
            return split
    return None


@dataclass
class _Tally:
    """What the stage reports in ``store.json`` besides the splits themselves."""

    dropped: dict[str, int] = field(default_factory=dict)
    failed: list[dict[str, str]] = field(default_factory=list)
    backends: Counter[str] = field(default_factory=Counter)


def _decode_split(
    split: str, rows: list[Row], paths: StagePaths, cfg: DecodeSection, classes: list[str],
    quarantine: dict[str, str], pool: DecodePool, split_dir: Path, tally: _Tally,
) -> dict[str, int]:
    """Decode a split's index ``rows`` into ``split_dir``: quarantined videos dropped, failures skipped, recorded."""
    kept = [r for r in rows if r.path not in quarantine]
    tally.dropped[split] = len(rows) - len(kept)
    if tally.dropped[split]:
        logger.warning("decode %s: dropping %d quarantined of %d videos (see %s)", split, tally.dropped[split],
                       len(rows), paths.scan / QUARANTINE_FILE)
    writer = ShardWriter(split_dir, cfg.shard_size, cfg.frames_per_video, cfg.size, frame_codec(cfg))
    jobs = [DecodeJob(os.fsdecode(paths.raw / r.path), r) for r in kept]
    whole: list[str] = []
    for out in decode_all(jobs, cfg.frames_per_video, cfg.size, cfg.backend, pool, f"decode {split}"):
        row = out.job.row
        if out.frames is None:
            logger.warning("decode %s: skipping %s", split, out.error)
            tally.failed.append({"path": display_path(row.path), "split": split, "reason": out.error})
            continue
        if out.took_whole:
            whole.append(display_path(row.path))
        name = row.label_name or (classes[row.label] if 0 <= row.label < len(classes) else "")
        writer.add(row.path, row.label, name, out.frames, out.num_source_frames)
        tally.backends[out.backend] += 1
    summary = writer.close()
    if whole:
        logger.warning("decode %s: %d video(s) with start/end in the index were used whole: no longer than that "
                       "segment (already-trimmed clips named like full videos?) or no frame rate; first: %s",
                       split, len(whole), whole[0])
    logger.info("decode %s: %d videos in %d shard(s), %.1f MB", split, summary.videos, summary.shards,
                summary.bytes / 1e6)
    return {"videos": summary.videos, "shards": summary.shards, "bytes": summary.bytes}


def decode_dataset(params: Params) -> Path:
    """Build ``StagePaths.frames`` from the index and the scan's quarantine; returns that directory."""
    paths = StagePaths.from_params(params)
    cfg = params.decode
    classes = read_classes(paths.index)
    quarantine = read_quarantine(paths.scan)
    started = time.perf_counter()

    target = paths.frames
    building = target.with_name(target.name + ".partial")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)

    splits: dict[str, dict[str, Any]] = {}
    tally = _Tally()
    decoded: dict[str, list[Row]] = {}
    try:
        with worker_pool(cfg.workers, params) as pool:
            for split in SPLITS:
                rows = read_index(paths.index, split)
                same = repeated_split(rows, decoded)
                if same is not None:
                    splits[split] = {**splits[same], "bytes": 0, SAME_AS: same}
                    tally.dropped[split] = tally.dropped[same]
                    logger.info("decode %s: the same %d videos as %s (the index repeats it): stored once, "
                                "%s reads %s/", split, len(rows), same, split, same)
                    continue
                decoded[split] = rows
                splits[split] = _decode_split(split, rows, paths, cfg, classes, quarantine, pool, building / split,
                                              tally)
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)  # the previous store, if any, stays untouched
        raise

    videos = sum(s["videos"] for s in splits.values() if SAME_AS not in s)  # videos stored, each once
    meta = {
        "dataset": params.dataset.name,
        "classes": classes,
        "frames_per_video": cfg.frames_per_video,
        "size": cfg.size,
        "frame_shape": [cfg.frames_per_video, cfg.size, cfg.size, 3],
        "dtype": "uint8",
        **format_meta(cfg),  # format + codec (library version included: it decides the bytes)
        "grid": "uniform segment centres",
        "backend": cfg.backend,
        "backends_used": dict(tally.backends),
        "splits": splits,
        "videos": videos,
        "bytes": sum(s["bytes"] for s in splits.values()),
        "dropped_quarantined": tally.dropped,
        "failed": tally.failed,
    }
    write_store_meta(building, meta)
    if target.exists():
        shutil.rmtree(target)
    os.replace(building, target)
    logger.info("decode: %d videos (%d quarantined dropped, %d failed), %.1f MB -> %s",
                videos, sum(tally.dropped.values()), len(tally.failed), meta["bytes"] / 1e6, target)
    write_timing(paths, "decode", started, videos, cfg.workers, frames=videos * cfg.frames_per_video)
    return target
