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
  protocol and the decode stage's grid); a video not clearly longer than the segment is taken
  whole (it already is the segment).
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


SEGMENT_SLACK = 0.1
"""How much longer than its ``[start, end)`` segment a video must be, as a fraction of the segment
(and at least two frames), before the segment is cut from it: a trimmed clip is about the segment's
length, a few frames of rounding more or less (1 s for Kinetics' 10-s segments).  Relative, so a
2-s video with a 1-s segment is still cut."""


def segment_bounds(num_frames: int, fps: float, start: float | None, end: float | None) -> tuple[int, int]:
    """``[first, stop)`` frame range of a video's ``[start, end)`` seconds (the whole video without them).

    The seconds are offsets into a FULL-LENGTH source video.  A file that is already the trimmed
    segment (a Kinetics clip a mirror names by bare id, which the index cannot tell from a full
    download) must not be cut again, so the whole video is used when it is not clearly longer than
    the segment (duration <= its length x (1 + :data:`SEGMENT_SLACK`), two frames at least) or when
    the segment starts at or after the video's end; otherwise a 10-s clip with ``start=14`` would
    give frames ``(299, 300)``.  A full video only looks "not clearly longer" when its segment
    starts within that slack of 0 s, where whole video and segment nearly coincide anyway.  Unknown
    ``fps`` (0) also means the whole video.
    """
    whole = (0, num_frames)
    if fps <= 0 or (start is None and end is None):
        return whole
    duration = num_frames / fps
    begin = start or 0.0
    if begin >= duration:
        return whole  # the segment starts beyond the video: it cannot be offsets into this file
    if end is not None and duration <= (end - begin) + max(SEGMENT_SLACK * (end - begin), 2 / fps):
        return whole  # no longer than the segment itself: the file is the segment
    first = min(max(int(round(begin * fps)), 0), num_frames - 1)
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
