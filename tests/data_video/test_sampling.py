"""Sampling is a pure, reproducible function that covers the clip and never indexes past the end."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from madapter.data.sampling import (
    multi_view_indices,
    segment_edges,
    segment_indices,
    uniform_grid,
)

frame_counts = st.integers(min_value=1, max_value=600)
clip_lens = st.integers(min_value=1, max_value=32)
seeds = st.integers(min_value=0, max_value=2**32 - 1)
FAST = settings(max_examples=150, deadline=None)


@FAST
@given(n=frame_counts, t=clip_lens, seed=seeds, train=st.booleans())
def test_tsn_indices_in_range_sorted_and_one_per_segment(n: int, t: int, seed: int, train: bool) -> None:
    idx = segment_indices(n, t, train=train, seed=seed)
    assert idx.shape == (t,) and idx.dtype == np.int64
    assert idx.min() >= 0 and idx.max() <= n - 1
    assert np.all(np.diff(idx) >= 0)
    edges = segment_edges(n, t)
    for i, k in enumerate(idx):
        # frame k lies in segment i (segments shorter than a frame share the frame they fall in)
        assert math.floor(edges[i]) <= k <= max(math.ceil(edges[i + 1]) - 1, math.floor(edges[i]))


@FAST
@given(n=frame_counts, t=clip_lens, seed=seeds)
def test_tsn_training_is_reproducible_for_a_seed(n: int, t: int, seed: int) -> None:
    a = segment_indices(n, t, train=True, seed=seed)
    b = segment_indices(n, t, train=True, seed=seed)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(segment_indices(n, t, train=True, seed=[seed, 3, 7]),
                                  segment_indices(n, t, train=True, seed=[seed, 3, 7]))


def test_tsn_training_offsets_vary_with_the_seed() -> None:
    clips = {tuple(segment_indices(300, 8, train=True, seed=s)) for s in range(20)}
    assert len(clips) == 20


@FAST
@given(n=st.integers(min_value=1, max_value=600), t=clip_lens)
def test_uniform_grid_covers_the_whole_video(n: int, t: int) -> None:
    grid = uniform_grid(n, t)
    step = n / t
    assert grid[0] <= math.floor(step / 2) and grid[-1] >= math.floor(n - step / 2) - 1
    if n >= t:
        assert len(set(grid.tolist())) == t  # enough frames: no frame is used twice


@FAST
@given(n=frame_counts, t=clip_lens, clips=st.integers(1, 10))
def test_multi_view_shapes_and_range(n: int, t: int, clips: int) -> None:
    views = multi_view_indices(n, t, clips)
    assert views.shape == (clips, t)
    assert views.min() >= 0 and views.max() <= n - 1


def test_multi_view_tsn_views_are_distinct_and_include_the_centred_clip() -> None:
    views = multi_view_indices(240, 8, 3)
    assert len({tuple(v) for v in views}) == 3
    np.testing.assert_array_equal(multi_view_indices(240, 8, 1)[0], segment_indices(240, 8, train=False))


def test_bad_arguments_are_rejected_with_the_reason() -> None:
    with pytest.raises(ValueError, match="no frames"):
        segment_indices(0, 8, train=False)
