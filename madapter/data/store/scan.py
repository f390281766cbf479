"""Scan stage: probe every indexed video and quarantine the ones later stages cannot use.

Why a separate stage: a corrupt file found in the middle of decoding (or worse, of training)
costs hours; found here, it costs one line in ``quarantine.csv``.  Each video is opened, counted
and has its first and last frame decoded (decord, with the PyAV fallback of
:mod:`madapter.data.video`).  Probes run in worker *processes* with a per-video timeout: a decoder
that hangs (a stalled network mount, a pathological file) or crashes the interpreter (decord can
segfault on garbage) is killed and recorded, and the scan goes on.

With ``RAY_ADDRESS`` set, each probe is a Ray task instead, spread over the cluster's nodes
(:mod:`madapter.data.store.ray_pool`; ``data/raw`` must be on a filesystem every node sees): the
timeout counts from the moment the task starts on its node, a task still running after it is
cancelled with ``force=True`` (Ray kills that worker), and a decoder that crashes its Ray worker
is recorded the same way.  The outputs are the same bytes either way: a crash's reason names no
exit code, because Ray does not report one (the local exit code goes to the log).

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
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Protocol

from tqdm import tqdm

from madapter.config import Params
from madapter.data.index.schema import SPLITS, read_index
from madapter.data.store.quarantine import write_quarantine
from madapter.data.store.ray_pool import NodeTally, connect, ray_requested, run_with_timeout
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


Probe = Callable[[Path, str, int], ProbeResult]
"""What a slot runs per video: :func:`probe_video` (tests pass one that really crashes its process)."""


def _timeout(rel: str, timeout_s: float) -> ProbeResult:
    return ProbeResult(rel, False, "timeout", f"no answer within scan.timeout_s={timeout_s:g} s; re-encode or drop it")


def _crashed(rel: str, detail: str) -> ProbeResult:
    """The same reason locally and on Ray (DVC hashes it); ``detail`` (exit code, Ray's error) is logged."""
    logger.warning("scan: probing %s crashed its worker (%s)", display_path(rel), detail)
    return ProbeResult(rel, False, "crashed", "the decoder crashed its worker process; re-encode or drop it")


def _probe_worker(conn: Connection, min_frames: int, probe: Probe) -> None:
    """Child process loop: receive ``(abs path, rel path)``, send back a :class:`ProbeResult`."""
    logging.basicConfig(level=logging.WARNING)
    conn.send("ready")
    while True:
        job = conn.recv()
        if job is None:
            return
        abs_path, rel = job
        conn.send(probe(Path(abs_path), rel, min_frames))


class _Slot(Protocol):
    def probe(self, abs_path: str, rel: str, timeout_s: float) -> ProbeResult: ...

    def close(self) -> None: ...


class _ProbeSlot:
    """One worker process with a pipe; killed and replaced when a probe hangs or crashes it."""

    def __init__(self, min_frames: int, probe: Probe = probe_video) -> None:
        self.min_frames = min_frames
        self.probe_fn = probe
        self._start()

    def _start(self) -> None:
        ctx = mp.get_context("spawn")  # never fork a parent holding decoder / torch threads
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_probe_worker, args=(child, self.min_frames, self.probe_fn), daemon=True)
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
            return _crashed(rel, f"exit code {code}")
        self._restart()
        return _timeout(rel, timeout_s)

    def close(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


class _RayProbeSlot:
    """Each probe one Ray task somewhere on the cluster (:func:`~madapter.data.store.ray_pool.run_with_timeout`):
    Ray kills a hung task's worker and replaces a crashed one, so a slot has nothing to restart."""

    def __init__(self, min_frames: int, probe: Probe, tally: NodeTally) -> None:
        self.min_frames, self.probe_fn, self.tally = min_frames, probe, tally

    def probe(self, abs_path: str, rel: str, timeout_s: float) -> ProbeResult:
        outcome, value = run_with_timeout(self.probe_fn, (Path(abs_path), rel, self.min_frames), timeout_s, self.tally)
        if outcome == "timeout":
            return _timeout(rel, timeout_s)
        if outcome == "crashed":
            return _crashed(rel, value)
        return value

    def close(self) -> None:
        pass


def probe_all(jobs: list[tuple[str, str]], workers: int, timeout_s: float, min_frames: int,
              probe: Probe = probe_video) -> list[ProbeResult]:
    """Probe ``(abs path, rel path)`` jobs with ``workers`` local processes; results in job order."""
    return _run_slots(jobs, workers, timeout_s, lambda: _ProbeSlot(min_frames, probe))


def probe_all_on_ray(jobs: list[tuple[str, str]], cpus: int, timeout_s: float, min_frames: int, tally: NodeTally,
                     probe: Probe = probe_video) -> list[ProbeResult]:
    """Probe the jobs as Ray tasks, ``cpus`` at a time (the cluster's CPUs); results in job order."""
    return _run_slots(jobs, cpus, timeout_s, lambda: _RayProbeSlot(min_frames, probe, tally))


def _run_slots(jobs: list[tuple[str, str]], workers: int, timeout_s: float,
               new_slot: Callable[[], _Slot]) -> list[ProbeResult]:
    """One thread per slot takes the next job until none is left; results in job order."""
    results: dict[int, ProbeResult] = {}
    lock = threading.Lock()
    queue: Iterator[tuple[int, tuple[str, str]]] = iter(enumerate(jobs))
    bar = tqdm(total=len(jobs), desc="scan", unit="video", leave=False, disable=None)

    def run_slot() -> None:
        slot = new_slot()
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
    started = time.perf_counter()
    if ray_requested():
        workers, tally = connect(params, "scan", cfg.workers).cpus, NodeTally()
        logger.info("scan: probing %d videos as Ray tasks, %d at a time (timeout %g s)", len(jobs), workers, cfg.timeout_s)
        results = probe_all_on_ray(jobs, workers, cfg.timeout_s, cfg.min_frames, tally)
        logger.info("scan on Ray: %s", tally.summary())
    else:
        workers = cfg.workers
        logger.info("scan: probing %d videos with %d workers (timeout %g s)", len(jobs), workers, cfg.timeout_s)
        results = probe_all(jobs, workers, cfg.timeout_s, cfg.min_frames)

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
    write_timing(paths, "scan", started, len(results), workers)
    level = logging.WARNING if bad else logging.INFO
    logger.log(level, "scan: %d of %d videos quarantined (%s) -> %s", len(bad), len(results),
               ", ".join(f"{k}: {v}" for k, v in report["reasons"].items()) or "none", quarantine)
    return paths.scan
