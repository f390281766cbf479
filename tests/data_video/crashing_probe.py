"""A scan probe that really crashes its process on one file name: a decoder segfault on demand.

Why a stand-in: no small video file reliably segfaults decord, yet the scan must survive one.  This
probe dereferences address 0 (SIGSEGV, like a decoder bug) for :data:`CRASH_NAME` and probes every
other file for real.  It lives in its own light module because the scan's worker processes and
Ray's workers import it by name (``tests`` is on both paths).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

from madapter.data.store.scan import ProbeResult, probe_video

CRASH_NAME = "crash.mp4"


def crash_or_probe(path: Path, rel: str, min_frames: int) -> ProbeResult:
    """Segfault on :data:`CRASH_NAME`, else :func:`~madapter.data.store.scan.probe_video`."""
    if path.name == CRASH_NAME:
        ctypes.string_at(0)  # reads address 0: the process dies of SIGSEGV
    return probe_video(path, rel, min_frames)
