"""Which frames to read: pure functions of (frame count, sampling parameters, seed).

Nothing here touches a file, so the indices for a video are reproducible anywhere (any worker,
any machine) from the seed alone, and the properties the pipeline relies on are testable: every
index lies in ``[0, num_frames - 1]``, TSN picks one frame from each of ``num_segments`` equal
segments (so a clip covers the whole video), and a seed always gives the same indices.

- :func:`segment_indices` -- TSN: random offset per segment for training, segment centres for
  evaluation (also the fixed uniform grid the decode stage stores, :func:`uniform_grid`).
- :func:`multi_view_indices` -- ``clips`` TSN evaluation views spread evenly over the video.
- :func:`protocol_indices` -- the evaluation protocol's views of a SOURCE video (its whole length,
  or its ``[start, end)`` segment): what ``evaluate``, ``predict`` and the served model all read.
- :func:`segment_bounds` -- the frame range of a ``[start, end)`` segment in seconds (shared by the
  protocol and the decode stage's grid).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SeedLike = int | Sequence[int]


def _check(num_frames: int, clip_len: int) -> None:
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1 (got {num_frames}): the video has no frames")
    if clip_len < 1:
        raise ValueError(f"clip length must be >= 1 (got {clip_len})")


def segment_edges(num_frames: int, num_segments: int) -> np.ndarray:
    """Float boundaries of ``num_segments`` equal segments of ``[0, num_frames)``."""
    return np.linspace(0.0, float(num_frames), num_segments + 1)


def segment_indices(num_frames: int, num_segments: int, *, train: bool, seed: SeedLike = 0) -> np.ndarray:
    """TSN sampling: one frame per equal segment; random position (train) or the centre (eval).

    With fewer frames than segments, segments are shorter than a frame and indices repeat.
    """
    _check(num_frames, num_segments)
    edges = segment_edges(num_frames, num_segments)
    fraction = np.random.default_rng(seed).random(num_segments) if train else np.full(num_segments, 0.5)
    positions = edges[:-1] + fraction * (edges[1:] - edges[:-1])
    return np.clip(np.floor(positions).astype(np.int64), 0, num_frames - 1)


def uniform_grid(num_frames: int, count: int) -> np.ndarray:
    """The fixed grid the decode stage stores: ``count`` segment centres."""
    return segment_indices(num_frames, count, train=False)


def multi_view_indices(num_frames: int, clip_len: int, clips: int) -> np.ndarray:
    """``[clips, clip_len]`` deterministic TSN evaluation views spread over the video.

    View ``k`` takes, in every segment, the frame at fraction ``(k + 0.5) / clips`` of it, so one
    view is the centred clip.
    """
    _check(num_frames, clip_len)
    if clips < 1:
        raise ValueError(f"clips must be >= 1 (got {clips})")
    edges = segment_edges(num_frames, clip_len)
    views = [edges[:-1] + (k + 0.5) / clips * (edges[1:] - edges[:-1]) for k in range(clips)]
    return np.clip(np.floor(np.stack(views)).astype(np.int64), 0, num_frames - 1)


def segment_bounds(num_frames: int, fps: float, start: float | None, end: float | None) -> tuple[int, int]:
    """``[first, stop)`` frame range of a video's ``[start, end)`` seconds (the whole video without them)."""
    first, stop = 0, num_frames
    if fps > 0 and (start is not None or end is not None):
        first = min(max(int(round((start or 0.0) * fps)), 0), num_frames - 1)
        stop = max(min(int(round(end * fps)) if end is not None else num_frames, num_frames), first + 1)
    return first, stop


def protocol_indices(
    num_frames: int, fps: float, clip_len: int, clips: int, start: float | None = None, end: float | None = None
) -> np.ndarray:
    """``[clips, clip_len]`` source-frame indices of the evaluation protocol.

    The clip is TSN-style, one frame from each of ``clip_len`` equal segments of the whole video
    (or segment), and the ``clips`` views take each segment's frame at phases ``(k + 0.5) / clips``:
    K clips spread uniformly over the whole video, none a shifted copy of another.  Training sees
    the same kind of clip (one random frame per segment), so evaluation asks no new question.
    """
    first, stop = segment_bounds(num_frames, fps, start, end)
    return first + multi_view_indices(stop - first, clip_len, clips)
