"""ClipDataset / load_video_views: shapes, normalisation, reproducible per-epoch randomness, order kept."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from madapter.config import Params
from madapter.data.clips import ClipDataset, ViewProtocol, load_video_views
from madapter.data.store.decode import decode_dataset
from madapter.data.store.frame_store import FrameStore
from madapter.data.store.scan import scan_videos
from madapter.paths import StagePaths

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> FrameStore:
    from madapter.data.acquire.synthetic import generate_synthetic

    from .conftest import index_from_lists, make_params

    params: Params = make_params(tmp_path_factory.mktemp("clips"), decode={"frames_per_video": 16})
    paths = StagePaths.from_params(params)
    generate_synthetic(paths.raw, params.dataset.synthetic, params.base.seed)
    index_from_lists(paths.raw, paths.index)
    scan_videos(params)
    return FrameStore(decode_dataset(params), "train")


def square_x(clip: torch.Tensor) -> np.ndarray:
    """Horizontal centre of the bright object in each frame of a normalised ``[T,3,H,W]`` clip."""
    pixels = clip * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
    mask = (pixels.sum(1) > 1.65).float()  # object channels >= 150/255, background <= 132/255
    columns = torch.arange(clip.shape[-1]).float()
    return ((mask.sum(1) * columns).sum(-1) / mask.sum((1, 2))).numpy()


def test_train_items_are_normalised_clips(store: FrameStore) -> None:
    ds = ClipDataset(store, num_frames=8, train=True, mean=MEAN, std=STD, crop_size=28, seed=0)
    x, label = ds[0]
    assert x.shape == (8, 3, 28, 28) and x.dtype == torch.float32 and label == int(store.labels[0])
    frames = store[0][0]
    raw_mean = torch.from_numpy(frames).float().div(255).mean((0, 1, 2))
    # a 28px crop of a 32px frame: channel means close to the whole frame's, after normalisation
    expected = (raw_mean - torch.tensor(MEAN)) / torch.tensor(STD)
    assert torch.allclose(x.mean((0, 2, 3)), expected, atol=0.25)


def test_training_randomness_is_reproducible_per_seed_and_epoch(store: FrameStore) -> None:
    def clips(seed: int, epoch: int) -> list[torch.Tensor]:
        ds = ClipDataset(store, 4, True, MEAN, STD, crop_size=24, seed=seed)
        ds.set_epoch(epoch)
        return [ds[i][0] for i in range(len(ds))]

    a, b = clips(0, 1), clips(0, 1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert any(not torch.equal(x, y) for x, y in zip(a, clips(0, 2), strict=True))
    assert any(not torch.equal(x, y) for x, y in zip(a, clips(1, 1), strict=True))


def test_eval_items_are_deterministic_single_clips(store: FrameStore) -> None:
    ds = ClipDataset(store, 4, False, MEAN, STD, crop_size=24, seed=0)
    single = ds[1][0]
    assert single.shape == (4, 3, 24, 24) and torch.equal(single, ds[1][0])


def test_frame_order_is_kept_and_never_flipped(store: FrameStore) -> None:
    right = [i for i, p in enumerate(store.paths) if p.startswith("move_right/")]
    left = [i for i, p in enumerate(store.paths) if p.startswith("move_left/")]
    for epoch in range(3):
        ds = ClipDataset(store, 4, True, MEAN, STD, crop_size=32, seed=0)
        ds.set_epoch(epoch)
        assert all(np.all(np.diff(square_x(ds[i][0])) > 0) for i in right)
        assert all(np.all(np.diff(square_x(ds[i][0])) < 0) for i in left)


def test_load_video_views_from_a_raw_file(store: FrameStore) -> None:
    path = store.root.parent.parent / "raw" / "synthetic" / store.paths[0]
    two = ViewProtocol(num_frames=4, clips=2, crops=1, crop_size=32, mean=MEAN, std=STD)
    views = load_video_views(path, two).tensor
    assert views.shape == (2, 4, 3, 32, 32)
    assert np.all(np.diff(square_x(views[0])) > 0)  # move_right, in order
    centred = ClipDataset(store, 4, False, MEAN, STD, crop_size=32, seed=0)[0][0]
    one = load_video_views(path, ViewProtocol(num_frames=4, clips=1, crops=1, crop_size=32, mean=MEAN, std=STD))
    # the store holds all 16 source frames here, so the raw-file path sees the same frames
    assert (one.tensor[0] - centred).abs().mean() < 0.05
