"""The evaluation protocol on a long source video: K clips over the whole video, crops along the
long side, and the SAME frames and crops whether ``evaluate`` or ``predict`` takes them.

The fixture is a real 300-frame, 80x48 (landscape) H.264 file whose every frame carries its own
index in two flat grey bands, so the test reads back which source frames each view holds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from madapter.config import ModelSection
from madapter.data.acquire.synthetic import encode_video
from madapter.data.clips import SourceVideo, SourceVideoDataset, ViewProtocol, load_video_views
from madapter.evaluate import protocol_logits
from madapter.metrics import average_views
from madapter.models.build import build_model
from madapter.predict import VideoPredictor

NUM_FRAMES, HEIGHT, WIDTH = 300, 48, 80
UNIT = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # mean/std that keep pixel values readable (x / 255)


def _frame(i: int) -> np.ndarray:
    frame = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    frame[: HEIGHT // 2] = 8 + 12 * (i % 20)
    frame[HEIGHT // 2 :] = 8 + 16 * (i // 20)
    return frame


def _index_of(view_frame: torch.Tensor) -> int:
    """Source index of a ``[3, H, W]`` view frame (values in 0..1) from its two grey bands."""
    pixels = view_frame.mean(0).numpy() * 255
    h = pixels.shape[0]
    low = pixels[: h // 2 - 2].mean()
    high = pixels[h // 2 + 2 :].mean()
    return int(round((high - 8) / 16)) * 20 + int(round((low - 8) / 12))


@pytest.fixture(scope="module")
def long_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("protocol") / "long.mp4"
    return encode_video(path, [_frame(i) for i in range(NUM_FRAMES)], fps=25)


PROTOCOL = ViewProtocol(num_frames=8, clips=3, crops=3, crop_size=32, mean=UNIT[0], std=UNIT[1])


def test_clips_spread_over_the_whole_video_and_the_pixels_are_those_frames(long_video: Path) -> None:
    views = load_video_views(long_video, PROTOCOL)
    idx = views.frame_indices
    assert idx.shape == (3, 8)
    assert len(np.unique(idx)) == 24  # three distinct clips, not shifted copies of one short grid
    segment = NUM_FRAMES / 8
    assert idx.min() < segment / 2 and idx.max() > NUM_FRAMES - segment / 2  # the whole video is covered
    assert np.all(np.diff(idx, axis=1) > 0)  # each clip in temporal order
    # every clip takes one frame per segment of the whole video
    assert np.all(np.floor(idx / segment) == np.arange(8))
    for clip in range(3):
        for t in range(8):
            seen = _index_of(views.tensor[clip * 3, t])  # crop 0 of this clip
            assert seen == idx[clip, t], (clip, t, seen, idx[clip, t])


def test_three_crops_slide_along_the_long_side_at_the_short_side_scale(long_video: Path) -> None:
    views = load_video_views(long_video, PROTOCOL)
    assert views.resized_hw == (32, round(WIDTH * 32 / HEIGHT))  # short side -> crop size
    tops, lefts = zip(*views.boxes, strict=True)
    assert tops == (0, 0, 0)
    assert lefts[0] == 0 and lefts[-1] == views.resized_hw[1] - 32 and lefts[0] < lefts[1] < lefts[2]
    assert views.tensor.shape == (9, 8, 3, 32, 32)


def test_segment_bounds_restrict_the_views(long_video: Path) -> None:
    """Trimmed datasets (``start``/``end`` seconds in the index): views stay inside the segment."""
    views = load_video_views(long_video, PROTOCOL, start=4.0, end=8.0)  # 25 fps -> frames 100..199
    assert views.frame_indices.min() >= 100 and views.frame_indices.max() <= 199


def test_predict_and_evaluate_take_the_same_views_and_scores(long_video: Path) -> None:
    cfg = ModelSection(backbone="vit_tiny_patch16_224", img_size=32, num_frames=8, width=32)
    model = build_model(cfg, num_classes=3).eval()
    predictor = VideoPredictor(model, ["a", "b", "c"], PROTOCOL)
    evaluation = SourceVideoDataset([SourceVideo(str(long_video), 1)], PROTOCOL)

    assert torch.equal(predictor.views(long_video).tensor, evaluation[0][0])
    logits, labels = protocol_logits(model, evaluation, batch_size=1, loader_workers=0)
    assert labels.tolist() == [1]
    np.testing.assert_allclose(average_views(logits)[0], predictor.probabilities(long_video), rtol=1e-5, atol=1e-6)
