"""Reading frames: decord and PyAV agree, VP9 webm goes through PyAV and gives the right frames."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from madapter.data.acquire.synthetic import encode_video
from madapter.data.sampling import uniform_grid
from madapter.data.video import DecordVideo, PyAVVideo, VideoError, open_video, preferred_backend, read_frames


def numbered_frames(count: int, size: int = 64) -> np.ndarray:
    """Frame k has a bright bar at column 4k and brightness 8k: its index can be read back."""
    frames = np.full((count, size, size, 3), 40, dtype=np.uint8)
    for k in range(count):
        frames[k, :, :, 0] = 20 + 8 * k
        frames[k, :, 4 * k % size : 4 * k % size + 4] = 255
    return frames


def frame_number(frame: np.ndarray) -> int:
    """Inverse of :func:`numbered_frames` (the bar column; robust to codec noise)."""
    return int(np.argmax(frame[:, :, 1].astype(int).sum(0)) // 4)


@pytest.fixture(scope="module")
def h264_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return encode_video(tmp_path_factory.mktemp("h264") / "numbered.mp4", numbered_frames(16), fps=8,
                        options={"g": "4"})


@pytest.fixture(scope="module")
def vp9_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # short GOPs (keyframe every 4) plus hidden alt-ref frames: what decord mis-seeks in SSv2 webm
    return encode_video(tmp_path_factory.mktemp("vp9") / "numbered.webm", numbered_frames(16), fps=12,
                        codec="libvpx-vp9", options={"g": "4", "crf": "20", "b": "0", "deadline": "realtime"})


def test_decord_sparse_read_matches_pyav_decode_everything(h264_video: Path) -> None:
    indices = [0, 3, 7, 8, 15, 15]
    sparse = DecordVideo(h264_video).get_frames(indices)
    everything = PyAVVideo(h264_video).decode_all()
    assert len(everything) == 16 and sparse.shape == (6, 64, 64, 3)
    assert np.abs(sparse.astype(int) - everything[indices].astype(int)).mean() < 2.0
    assert [frame_number(f) for f in sparse] == indices


def test_pyav_reader_counts_and_reads(h264_video: Path) -> None:
    video = PyAVVideo(h264_video)
    assert video.num_frames == 16 and video.count_decoded() == 16 and video.fps == pytest.approx(8)
    np.testing.assert_array_equal(video.get_frames([5, 2]), video.decode_all()[[5, 2]])


def test_vp9_webm_is_routed_to_pyav_and_decodes_the_right_frames(vp9_video: Path) -> None:
    assert preferred_backend(vp9_video, "decord") == "pyav"
    result = read_frames(vp9_video, lambda n, fps: uniform_grid(n, 8), backend="decord")
    reference = PyAVVideo(vp9_video).decode_all()  # PyAV decoding every frame, in order
    assert result.backend == "pyav" and result.num_frames == 16 == len(reference)
    np.testing.assert_array_equal(result.indices, uniform_grid(16, 8))
    np.testing.assert_array_equal(result.frames, reference[result.indices])
    assert [frame_number(f) for f in result.frames] == result.indices.tolist()


def test_h264_mp4_stays_on_decord(h264_video: Path) -> None:
    result = read_frames(h264_video, lambda n, fps: np.array([n - 1]), backend="decord")
    assert result.backend == "decord" and frame_number(result.frames[0]) == 15


def test_decord_failure_falls_back_to_pyav_and_stays_inside_the_real_frames(tmp_path: Path) -> None:
    # a download cut at 80%: the header (moved to the front) promises 16 frames, fewer decode
    full = encode_video(tmp_path / "full.mp4", numbered_frames(16), fps=8, options={"g": "4"},
                        container_options={"movflags": "faststart"})
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: int(full.stat().st_size * 0.8)])
    assert DecordVideo(full).num_frames == 16
    with pytest.raises(VideoError, match="decord"):
        DecordVideo(cut)
    true_count = PyAVVideo(cut).count_decoded()
    assert 0 < true_count < 16
    result = read_frames(cut, lambda n, fps: np.array([0, n // 2, n - 1]), backend="decord")
    assert result.backend == "pyav" and result.indices.max() == result.num_frames - 1
    numbers = [frame_number(f) for f in result.frames]
    assert numbers[0] == 0 and numbers[-1] == true_count - 1  # the last frame that really exists


def test_bad_files_raise_one_line_errors_naming_the_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.touch()
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    odd = tmp_path / os.fsdecode(b"caf\xe9.mp4")  # a Latin-1 name: not valid UTF-8
    odd.write_bytes(b"x")
    for path, cause in ((empty, "empty file"), (garbage, "cannot"), (tmp_path / "nope.mp4", "not found"),
                        (odd, "not valid UTF-8")):
        for backend in ("decord", "pyav"):
            with pytest.raises(VideoError) as info:
                open_video(path, backend) if path != garbage else read_frames(path, lambda n, f: [0], backend)
            message = str(info.value)
            assert "\n" not in message and cause in message and os.fsdecode(path.name)[:3] in message
