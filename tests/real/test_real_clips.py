"""Every real clip decodes with both backends: the right length and rate, and frames that move.

These are the codecs and containers users' datasets come in (HMDB51 DivX, UCF101 Xvid, CVDF-trimmed
Kinetics-400 h264 + AAC), including HMDB51's cartwheel clip whose metadata is not valid UTF-8.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.real_material import CLIPS, Clip
from madapter.data.sampling import uniform_grid
from madapter.data.video import DecordVideo, PyAVVideo, read_frames


@pytest.mark.parametrize("clip", CLIPS, ids=[c.name for c in CLIPS])
def test_real_clip_decodes_with_decord_and_pyav(real_material, clip: Clip) -> None:
    path = real_material.clip(clip.name)
    decord_video, pyav_video = DecordVideo(path), PyAVVideo(path)
    seconds = pyav_video.num_frames / pyav_video.fps
    assert clip.min_seconds <= seconds <= clip.max_seconds, f"{clip.name}: {seconds:.2f} s"
    assert decord_video.fps == pytest.approx(clip.fps, abs=0.05)
    assert pyav_video.fps == pytest.approx(clip.fps, abs=0.05)
    # decord may over-count by a frame or two on some containers (the reason PyAV counts packets).
    assert abs(decord_video.num_frames - pyav_video.num_frames) <= 2

    picks = uniform_grid(min(decord_video.num_frames, pyav_video.num_frames), 8)
    by_decord = decord_video.get_frames(picks)
    by_pyav = pyav_video.get_frames(picks)
    assert by_decord.shape == by_pyav.shape and by_decord.shape[0] == 8 and by_decord.shape[-1] == 3
    assert by_decord.dtype == np.uint8
    # Frames along the clip differ: not one repeated frame (which frame is which: the test below).
    for frames, backend in ((by_decord, "decord"), (by_pyav, "pyav")):
        steps = np.abs(np.diff(frames.astype(np.int16), axis=0)).mean(axis=(1, 2, 3))
        assert (steps > 1.0).sum() >= 5, f"{clip.name} ({backend}): grid frames barely differ: {steps.round(2)}"


def test_non_utf8_metadata_is_read_through_the_fallback(real_material) -> None:
    """The HMDB51 cartwheel clip: PyAV with strict metadata decoding raises UnicodeDecodeError on opening it."""
    path = real_material.clip("hmdb51_Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi")
    result = read_frames(path, lambda n, fps: uniform_grid(n, 4), backend="pyav")
    assert result.backend == "pyav" and result.frames.shape[0] == 4
    assert result.num_frames > 60


@pytest.mark.parametrize("clip", CLIPS, ids=[c.name for c in CLIPS])
def test_sparse_reads_return_the_frames_a_sequential_decode_gives(real_material, clip: Clip) -> None:
    """What the pipeline reads (``read_frames``: decord where it seeks right, else PyAV) is, frame for
    frame, what decoding the whole clip in order gives.  decord's sparse reads of HMDB51's DivX AVIs
    return other frames (20 frames off on TrumanShow), which no synthetic fixture showed."""
    path = real_material.clip(clip.name)
    every = PyAVVideo(path).decode_all()
    result = read_frames(path, lambda n, fps: uniform_grid(min(n, len(every)), 8))
    for k, index in enumerate(result.indices):
        error = np.abs(result.frames[k].astype(np.int16) - every[index].astype(np.int16)).mean()
        assert error < 1.0, f"{clip.name} ({result.backend}): frame {index} differs by {error:.1f} grey levels"
