"""``segment_bounds`` applies ``[start, end)`` seconds only to a video clearly longer than the segment.

A file that is already the trimmed segment (a Kinetics clip a mirror names by bare id, so the index
cannot tell) must not be cut again: read as offsets into the 10-s clip, ``14..24`` s became frames
``(299, 300)`` -- every stored frame, evaluation view and feature was frame 299.
"""

from __future__ import annotations

import numpy as np
import pytest

from madapter.data import sampling
from madapter.data.sampling import protocol_indices, segment_bounds
from madapter.data.store.decode import grid_indices


@pytest.mark.parametrize(
    "num_frames,fps,start,end,expected",
    [
        (300, 30.0, 14.0, 24.0, (0, 300)),     # a 10-s trimmed clip, start beyond its length: the whole clip
        (300, 30.0, 3.0, 13.0, (0, 300)),      # start < 10 s: the first 3 s are NOT cut from the clip
        (3000, 30.0, 14.0, 24.0, (420, 720)),  # a 100-s full-length video: the segment
        (299, 29.97, 0.0, 10.0, (0, 299)),     # a trimmed clip whose CSV segment starts at 0
        (900, 30.0, 40.0, 50.0, (0, 900)),     # 30-s video, segment starting after its end: the whole video
        (600, 30.0, 14.0, 24.0, (420, 600)),   # 20-s video, segment running past its end: cut at the end
        (330, 30.0, 0.0, 10.0, (0, 330)),      # 11 s = segment + 10 %: not CLEARLY longer, the whole video
        (360, 30.0, 1.0, 11.0, (30, 330)),     # 12 s: longer than segment + slack, the segment
        (300, 25.0, 4.0, 8.0, (100, 200)),     # tests/data_video/test_protocol.py's trimmed-dataset case
        (300, 30.0, None, None, (0, 300)),     # no segment
        (300, 0.0, 14.0, 24.0, (0, 300)),      # unknown fps: the whole video
    ],
)
def test_segment_bounds(num_frames: int, fps: float, start: float | None, end: float | None,
                        expected: tuple[int, int]) -> None:
    assert segment_bounds(num_frames, fps, start, end) == expected


def test_slack_is_relative_to_the_segment() -> None:
    """About 1 s for Kinetics' 10-s segments; a short segment of a longer video is still cut."""
    assert 0.05 <= sampling.SEGMENT_SLACK <= 0.2
    assert segment_bounds(16, 8.0, 1.0, 2.0) == (8, 16)  # 2-s video, 1-s segment (test_decode_store's case)
    assert segment_bounds(9, 8.0, 1.0, 2.0) == (0, 9)    # 1.125 s: the segment's length + 1 frame


def test_the_stored_grid_of_a_trimmed_clip_spans_the_clip() -> None:
    """The decode stage's grid (what training reads) for the Kinetics case of the bug report."""
    grid = grid_indices(300, 30.0, 16, 14.0, 24.0)
    assert len(np.unique(grid)) == 16
    assert grid.min() < 300 / 16 and grid.max() > 300 - 300 / 16


def test_the_evaluation_views_of_a_trimmed_clip_spread_over_the_clip() -> None:
    """evaluate / predict / features / batch-predict all take their views through ``protocol_indices``."""
    views = protocol_indices(300, 30.0, 8, 3, 14.0, 24.0)
    assert views.shape == (3, 8) and len(np.unique(views)) == 24
    assert views.min() < 300 / 8 and views.max() > 300 - 300 / 8


def test_a_full_video_keeps_its_segment_in_every_view() -> None:
    views = protocol_indices(3000, 30.0, 8, 3, 14.0, 24.0)
    assert views.min() >= 420 and views.max() < 720
