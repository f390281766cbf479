"""Scan stage: probe every indexed video and quarantine the ones later stages cannot use.

Why a separate stage: a corrupt file found in the middle of decoding (or worse, of training)
costs hours; found here, it costs one line in ``quarantine.csv``.  Each video is opened, counted
and has its first and last frame decoded (decord, with the PyAV fallback of
:mod:`madapter.data.video`).  Probes run in worker *processes* with a per-video timeout: a decoder
that hangs (a stalled network mount, a pathological file) or crashes the interpreter (decord can
segfault on garbage) is killed and recorded, and the scan goes on.

Outputs (``StagePaths.scan``): ``quarantine.csv`` (``path,reason``; the decode stage's input,
so it is written and read through :mod:`madapter.data.store.quarantine`) and ``report.json``
(owned here).  Both are a pure function of the index, the videos and
``scan.timeout_s``/``scan.min_frames``: DVC hashes them, so they name files by their
dataset-relative path and hold no timings and no worker count (those go to
``outputs/timings/scan.json``, see :mod:`madapter.data.timing`).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import statistics
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from tqdm import tqdm

from madapter.config import Params
from madapter.data.index.schema import SPLITS, read_index
from madapter.data.store.quarantine import write_quarantine
from madapter.data.timing import write_timing
from madapter.data.video import (
    DecordVideo,
    PyAVVideo,
    VideoError,
    check_file,
    display_path,
    preferred_backend,
    relative_reason,
)
from madapter.fileio import write_json_atomic
from madapter.paths import StagePaths

logger = logging.getLogger(__name__)

RUN_CONTROL_KEYS = frozenset({"workers"})
"""``scan`` keys that change how fast the stage runs, never what it writes (not DVC params)."""


# ------------------------------------------------------------------------------------------ probing
@dataclass(frozen=True)
class ProbeResult:
    path: str
    ok: bool
    kind: str
    """``ok`` or a short category: bad_name, missing, empty, unreadable, too_short, timeout, crashed."""
    reason: str = ""
    num_frames: int = 0
    backend: str = ""
    note: str = ""
    """Why the decord path was not used, when PyAV had to step in."""


def _classify(err: VideoError) -> str:
    text = str(err)
    for marker, kind in (("not valid UTF-8", "bad_name"), ("file not found", "missing"),
                         ("empty file", "empty"), ("is a directory", "missing")):
        if marker in text:
            return kind
    return "unreadable"


def _reason(err: VideoError, path: Path, rel: str) -> str:
    """The error text without the leading path (the CSV already has a path column)."""
    text, prefix = relative_reason(err, path, rel), display_path(rel) + ": "
    return text[len(prefix):] if text.startswith(prefix) else text


def probe_video(path: Path, rel: str, min_frames: int) -> ProbeResult:
    """Open ``path``, count frames, decode the first and last; never raises for a bad file."""
    try:
        check_file(path)
    except VideoError as err:
        return ProbeResult(rel, False, _classify(err), _reason(err, path, rel))
    note = ""
    if preferred_backend(path) == "decord":
        try:
            video = DecordVideo(path)
            count = video.num_frames
            if count >= 1:
                video.get_frames([0, count - 1])
                if count >= min_frames:
                    return ProbeResult(rel, True, "ok", num_frames=count, backend="decord")
            note = f"decord: {count} frames"
        except VideoError as err:
            note = f"decord: {_reason(err, path, rel)}"
    try:
        count = PyAVVideo(path).count_decoded()
    except VideoError as err:
        return ProbeResult(rel, False, "unreadable", _reason(err, path, rel), note=note)
    if count < min_frames:
        return ProbeResult(rel, False, "too_short",
                           f"only {count} decodable frame(s), scan.min_frames is {min_frames}; drop or replace it",
                           num_frames=count, backend="pyav", note=note)
    return ProbeResult(rel, True, "ok", num_frames=count, backend="pyav", note=note)


def _probe_worker(conn: Connection, min_frames: int) -> None:
    """Child process loop: receive ``(abs path, rel path)``, send back a :class:`ProbeResult`."""
    logging.basicConfig(level=logging.WARNING)
    conn.send("ready")
    while True:
        job = conn.recv()
        if job is None:
            return
        abs_path, rel = job
        conn.send(probe_video(Path(abs_path), rel, min_frames))


class _ProbeSlot:
    """One worker process with a pipe; killed and replaced when a probe hangs or crashes it."""

    def __init__(self, min_frames: int) -> None:
        self.min_frames = min_frames
        self._start()

    def _start(self) -> None:
        ctx = mp.get_context("spawn")  # never fork a parent holding decoder / torch threads
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_probe_worker, args=(child, self.min_frames), daemon=True)
        self.proc.start()
        child.close()
        try:
            ready = self.conn.poll(120) and self.conn.recv() == "ready"
        except EOFError:
            ready = False
        if not ready:
            raise RuntimeError(f"scan worker process failed to start (exit code {self.proc.exitcode}); see its stderr above")

    def _restart(self) -> None:
        self.proc.kill()
        self.proc.join()
        self.conn.close()
        self._start()

    def probe(self, abs_path: str, rel: str, timeout_s: float) -> ProbeResult:
        self.conn.send((abs_path, rel))
        try:
            if self.conn.poll(timeout_s):
                return self.conn.recv()
        except (EOFError, ConnectionError):
            self.proc.join(5)
            code = self.proc.exitcode
            self._restart()
            return ProbeResult(rel, False, "crashed", f"the decoder crashed the worker (exit code {code}); re-encode or drop it")
        self._restart()
        return ProbeResult(rel, False, "timeout", f"no answer within scan.timeout_s={timeout_s:g} s; re-encode or drop it")

    def close(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


def probe_all(jobs: list[tuple[str, str]], workers: int, timeout_s: float, min_frames: int) -> list[ProbeResult]:
    """Probe ``(abs path, rel path)`` jobs with ``workers`` processes; results in job order."""
    results: dict[int, ProbeResult] = {}
    lock = threading.Lock()
    queue: Iterator[tuple[int, tuple[str, str]]] = iter(enumerate(jobs))
    bar = tqdm(total=len(jobs), desc="scan", unit="video", leave=False)

    def run_slot() -> None:
        slot = _ProbeSlot(min_frames)
        try:
            while True:
                with lock:
                    item = next(queue, None)
                if item is None:
                    return
                i, (abs_path, rel) = item
                result = slot.probe(abs_path, rel, timeout_s)
                with lock:
                    results[i] = result
                    bar.update()
        finally:
            slot.close()

    n_slots = max(1, min(workers, len(jobs)))
    with ThreadPoolExecutor(n_slots) as pool:
        for future in [pool.submit(run_slot) for _ in range(n_slots)]:
            future.result()
    bar.close()
    return [results[i] for i in range(len(jobs))]


# ------------------------------------------------------------------------------------------- stage
def scan_videos(params: Params) -> Path:
    """Probe every video of every index split; write ``quarantine.csv`` and ``report.json``.

    Same index, videos and settings -> the same bytes, whatever ``scan.workers`` is (results are
    kept in index order); the run's duration goes to ``outputs/timings/scan.json``.
    """
    paths = StagePaths.from_params(params)
    cfg = params.scan
    rels: dict[str, None] = {}
    for split in SPLITS:
        for row in read_index(paths.index, split):
            rels.setdefault(row.path)
    jobs = [(os.fsdecode(paths.raw / rel), rel) for rel in rels]
    logger.info("scan: probing %d videos with %d workers (timeout %g s)", len(jobs), cfg.workers, cfg.timeout_s)
    started = time.perf_counter()
    results = probe_all(jobs, cfg.workers, cfg.timeout_s, cfg.min_frames)

    bad = [r for r in results if not r.ok]
    good = [r for r in results if r.ok]
    quarantine = write_quarantine(paths.scan, [(r.path, r.reason) for r in bad])
    counts = [r.num_frames for r in good]
    report = {
        "dataset": params.dataset.name,
        "videos": len(results),
        "ok": len(good),
        "quarantined": len(bad),
        "reasons": dict(Counter(r.kind for r in bad)),
        "backends": dict(Counter(r.backend for r in good)),
        "pyav_fallbacks": [{"path": display_path(r.path), "note": r.note} for r in good if r.backend == "pyav"],
        "frames": {"min": min(counts), "median": statistics.median(counts), "max": max(counts)} if counts else {},
        "quarantine": [{**asdict(r), "path": display_path(r.path)} for r in bad],
        "settings": {"timeout_s": cfg.timeout_s, "min_frames": cfg.min_frames},
    }
    write_json_atomic(paths.scan / "report.json", report)
    write_timing(paths, "scan", started, len(results), cfg.workers)
    level = logging.WARNING if bad else logging.INFO
    logger.log(level, "scan: %d of %d videos quarantined (%s) -> %s", len(bad), len(results),
               ", ".join(f"{k}: {v}" for k, v in report["reasons"].items()) or "none", quarantine)
    return paths.scan
