"""Clips for the model: normalised ``[T, 3, H, W]`` tensors from the frame store or a source video.

- :class:`ClipDataset` -- the frame store, for training (random TSN offsets over the stored grid +
  random crop) and for the single-view validation during training (the centred clip and crop).
  Training randomness of item ``i`` in epoch ``e`` comes only from ``(seed, e, i)``, so any worker,
  any number of workers and a resumed run see the same clips.
- :func:`load_video_views` / :class:`SourceVideoDataset` -- the evaluation protocol
  (:class:`ViewProtocol`, ``frames x clips x crops``) on the SOURCE video, used by ``evaluate``,
  ``predict`` and the served model alike.

No horizontal flip anywhere: see :mod:`madapter.data.transforms`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from madapter.config import Params
from madapter.data.sampling import protocol_indices, segment_indices
from madapter.data.store.frame_store import FrameStore
from madapter.data.transforms import (
    center_crop,
    crop,
    crop_offsets,
    ensure_min_size,
    normalize,
    random_crop_offset,
    resize_short_side,
)
from madapter.data.video import Backend, read_frames

logger = logging.getLogger(__name__)


class ClipDataset(Dataset):
    """A :class:`FrameStore` split as model input: items ``(float [T, 3, H, W], label)``.

    Training items: random TSN offsets and a random crop, keyed by ``(seed, epoch, index)``.
    Validation items (``train=False``): the centred TSN clip and the centre crop.  Evaluation's
    multi-view protocol reads the source videos instead (:func:`load_video_views`).
    """

    def __init__(
        self, store: FrameStore, num_frames: int, train: bool, mean: Sequence[float], std: Sequence[float],
        crop_size: int, seed: int,
    ) -> None:
        self.store, self.num_frames, self.train = store, num_frames, train
        self.mean, self.std = tuple(mean), tuple(std)
        self.crop_size, self.seed = crop_size, seed
        self.epoch = 0
        if store.frames_per_video < num_frames:
            logger.warning("%s stores %d frames per video but clips need %d: frames will repeat",
                           store.root, store.frames_per_video, num_frames)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random clips training items come from."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        count, label = self.store.frames_per_video, int(self.store.labels[index])
        if self.train:
            key = [self.seed, self.epoch, index, 0]  # the trailing 0 keeps the clips of earlier runs (resume)
            idx = segment_indices(count, self.num_frames, train=True, seed=key)
            frames = ensure_min_size(self.store.frames(index, idx), self.crop_size)  # decodes only the clip's frames
            top, left = random_crop_offset(frames.shape[1], frames.shape[2], self.crop_size,
                                           np.random.default_rng([*key, 1]))
            clip = crop(frames, top, left, self.crop_size)
        else:
            idx = segment_indices(count, self.num_frames, train=False)
            clip = center_crop(ensure_min_size(self.store.frames(index, idx), self.crop_size), self.crop_size)
        return normalize(clip, self.mean, self.std), label


@dataclass(frozen=True)
class ViewProtocol:
    """``frames x clips x crops`` plus normalisation: how a source video becomes evaluation views.

    One object drives ``evaluate``, ``predict`` and the served model, so all three see the same
    frames and crops of the same video.  It is stored with a registered model (``to_dict``).
    """

    num_frames: int
    clips: int
    crops: int
    crop_size: int
    """The model's input size; frames are resized so their short side is this (the crop scale)."""
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @property
    def name(self) -> str:
        return f"{self.num_frames}x{self.clips}x{self.crops}"

    @classmethod
    def from_params(cls, params: Params, data_config: dict) -> ViewProtocol:
        return cls(
            num_frames=params.model.num_frames,
            clips=params.evaluate.clips,
            crops=params.evaluate.crops,
            crop_size=int(data_config["input_size"][-1]),
            mean=tuple(float(v) for v in data_config["mean"]),
            std=tuple(float(v) for v in data_config["std"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ViewProtocol:
        """Rebuild from ``to_dict`` output; keys of other versions (e.g. an old ``size``) are ignored."""
        known = {f.name for f in fields(cls)}
        kept = {k: v for k, v in data.items() if k in known}
        kept["mean"], kept["std"] = tuple(kept["mean"]), tuple(kept["std"])
        return cls(**kept)


@dataclass(frozen=True)
class VideoViews:
    """The views of one source video, and where each came from (for checks and debugging)."""

    tensor: torch.Tensor
    """``[clips * crops, T, 3, crop, crop]``, clip-major, normalised."""
    frame_indices: np.ndarray
    """``[clips, T]`` indices into the source video's frames."""
    boxes: list[tuple[int, int]]
    """``(top, left)`` of each crop in the resized frame."""
    resized_hw: tuple[int, int]
    """Frame size after resizing the short side to the crop size."""


def load_video_views(
    path: Path, protocol: ViewProtocol, start: float | None = None, end: float | None = None,
    backend: Backend = "decord",
) -> VideoViews:
    """The protocol's views of a SOURCE video file (decord, PyAV fallback), never of the frame store.

    Temporal: :func:`madapter.data.sampling.protocol_indices` over the whole video (or its
    ``[start, end)`` segment).  Spatial: short side resized to the crop size, ``crops`` crops along
    the long side.  Reading the source is what makes K clips really spread over a long video; the
    frame store keeps only a short grid, good for training jitter but too short for K distinct clips.
    """
    p = protocol

    def choose(count: int, fps: float) -> np.ndarray:
        return protocol_indices(count, fps, p.num_frames, p.clips, start, end).reshape(-1)

    result = read_frames(Path(path), choose, backend)
    frames = resize_short_side(result.frames, p.crop_size)
    height, width = frames.shape[1:3]
    boxes = crop_offsets(height, width, p.crop_size, p.crops)
    positions = np.arange(len(result.indices)).reshape(p.clips, p.num_frames)
    views = [normalize(crop(frames[idx], top, left, p.crop_size), p.mean, p.std)
             for idx in positions for top, left in boxes]
    return VideoViews(torch.stack(views), result.indices.reshape(p.clips, p.num_frames), boxes, (height, width))


@dataclass(frozen=True)
class SourceVideo:
    """One video to evaluate: absolute path, label and optional ``[start, end)`` seconds."""

    path: str
    label: int
    start: float | None = None
    end: float | None = None


class SourceVideoDataset(Dataset):
    """Evaluation items ``(views [V, T, 3, crop, crop], label)`` read from the source videos.

    Readers are opened inside ``__getitem__``, so DataLoader worker processes each use their own
    (decord readers must not cross a fork).
    """

    def __init__(self, videos: Sequence[SourceVideo], protocol: ViewProtocol, backend: Backend = "decord") -> None:
        self.videos, self.protocol, self.backend = list(videos), protocol, backend

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        video = self.videos[index]
        views = load_video_views(Path(video.path), self.protocol, video.start, video.end, self.backend)
        return views.tensor, video.label
