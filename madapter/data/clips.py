"""Clips for the model: frame-store videos (or a raw video file) -> normalised ``[T, 3, H, W]`` tensors.

Training clips are random (TSN offsets + random crop) but reproducible: the randomness of item
``i`` in epoch ``e`` comes only from ``(seed, e, i)``, so any worker, any number of workers and a
resumed run see the same clips.  Evaluation clips are deterministic multi-view sets
(``clips`` temporal views x ``crops`` spatial crops).  No horizontal flip: see
:mod:`madapter.data.transforms`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from madapter.data.sampling import SamplingMode, multi_view_indices, sample_clip
from madapter.data.store import FrameStore
from madapter.data.transforms import (
    crop,
    crop_offsets,
    ensure_min_size,
    normalize,
    random_crop_offset,
    resize_and_center_crop,
)
from madapter.data.video import Backend, read_frames

logger = logging.getLogger(__name__)


def _views(
    frames: np.ndarray, view_indices: np.ndarray, crop_size: int, crops: int,
    mean: Sequence[float], std: Sequence[float],
) -> torch.Tensor:
    """``[clips * crops, T, 3, crop, crop]`` from frames and ``[clips, T]`` indices (clip-major)."""
    frames = ensure_min_size(frames, crop_size)
    offsets = crop_offsets(frames.shape[1], frames.shape[2], crop_size, crops)
    views = [normalize(crop(frames[idx], top, left, crop_size), mean, std)
             for idx in view_indices for top, left in offsets]
    return torch.stack(views)


class ClipDataset(Dataset):
    """A :class:`FrameStore` split as model input.

    Items are ``(float [T, 3, H, W], label)`` when ``clips * crops == 1``, else
    ``(float [V, T, 3, H, W], label)`` with ``V = clips * crops`` views (clip-major order).
    """

    def __init__(
        self, store: FrameStore, num_frames: int, train: bool, mean: Sequence[float], std: Sequence[float],
        crop_size: int, seed: int, clips: int = 1, crops: int = 1,
        sampling: SamplingMode = "tsn", frame_interval: int = 1,
    ) -> None:
        if clips < 1 or crops < 1:
            raise ValueError(f"clips and crops must be >= 1 (got clips={clips}, crops={crops})")
        self.store, self.num_frames, self.train = store, num_frames, train
        self.mean, self.std = tuple(mean), tuple(std)
        self.crop_size, self.seed = crop_size, seed
        self.clips, self.crops = clips, crops
        self.sampling, self.frame_interval = sampling, frame_interval
        self.epoch = 0
        if store.frames_per_video < num_frames:
            logger.warning("%s stores %d frames per video but clips need %d: frames will repeat",
                           store.root, store.frames_per_video, num_frames)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random clips training items come from."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.store)

    @property
    def num_views(self) -> int:
        return self.clips * self.crops

    def _train_views(self, frames: np.ndarray, index: int) -> torch.Tensor:
        frames = ensure_min_size(frames, self.crop_size)
        views = []
        for view in range(self.num_views):
            key = [self.seed, self.epoch, index, view]
            idx = sample_clip(len(frames), self.num_frames, train=True, seed=key,
                              mode=self.sampling, interval=self.frame_interval)
            top, left = random_crop_offset(frames.shape[1], frames.shape[2], self.crop_size,
                                           np.random.default_rng([*key, 1]))
            views.append(normalize(crop(frames[idx], top, left, self.crop_size), self.mean, self.std))
        return torch.stack(views)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        frames, label = self.store[index]
        if self.train:
            x = self._train_views(frames, index)
        else:
            idx = multi_view_indices(len(frames), self.num_frames, self.clips, self.sampling, self.frame_interval)
            x = _views(frames, idx, self.crop_size, self.crops, self.mean, self.std)
        return (x[0] if self.num_views == 1 else x), label


def load_video_views(
    path: Path, num_frames: int, size: int, crop_size: int, clips: int, crops: int,
    mean: Sequence[float], std: Sequence[float], sampling: SamplingMode = "tsn", frame_interval: int = 1,
    backend: Backend = "decord",
) -> torch.Tensor:
    """``[clips * crops, T, 3, crop, crop]`` evaluation views of a raw video file (for prediction).

    Frames are prepared as the decode stage prepares the store (short side to ``size``, centre
    square), then viewed as :class:`ClipDataset` does in evaluation.
    """

    def choose(count: int, fps: float) -> np.ndarray:
        return multi_view_indices(count, num_frames, clips, sampling, frame_interval).reshape(-1)

    result = read_frames(Path(path), choose, backend)
    frames = resize_and_center_crop(result.frames, size)
    positions = np.arange(len(result.indices)).reshape(clips, num_frames)
    return _views(frames, positions, crop_size, crops, mean, std)
