"""Frame transforms: resizing, cropping, and uint8 frames -> normalised float tensors.

Frames travel as uint8 ``[T, H, W, 3]`` arrays (compact in the store, cheap to crop) and become
float ``[T, 3, H, W]`` only at the end.  There is deliberately no horizontal flip anywhere: the
synthetic classes (and SSv2's) differ by motion direction, and a flip turns one into the other.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F


def resize_short_side(frames: np.ndarray, size: int) -> np.ndarray:
    """Resize uint8 ``[T, H, W, 3]`` so the short side is ``size`` (aspect kept, antialiased)."""
    h, w = frames.shape[1:3]
    if min(h, w) == size:
        return frames
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def crop(frames: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    return frames[:, top : top + size, left : left + size]


def center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    h, w = frames.shape[1:3]
    return crop(frames, (h - size) // 2, (w - size) // 2, size)


def resize_and_center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """Short side to ``size``, then the central ``size x size`` square (the stored frame format)."""
    return np.ascontiguousarray(center_crop(resize_short_side(frames, size), size))


def crop_offsets(height: int, width: int, crop_size: int, crops: int) -> list[tuple[int, int]]:
    """``(top, left)`` of ``crops`` evaluation crops spread evenly along the LONG side.

    The standard multi-crop protocol: frames are resized so the short side is the crop size, and
    the crops slide along the long side (start / centre / end for 3), centred on the short side.
    One crop is the centre crop.  On a square frame the crops slide horizontally.
    """
    max_top, max_left = height - crop_size, width - crop_size
    if crops == 1:
        return [(max_top // 2, max_left // 2)]
    fractions = np.linspace(0.0, 1.0, crops)
    if height > width:
        return [(round(f * max_top), max_left // 2) for f in fractions]
    return [(max_top // 2, round(f * max_left)) for f in fractions]


def random_crop_offset(height: int, width: int, crop_size: int, rng: np.random.Generator) -> tuple[int, int]:
    return int(rng.integers(0, height - crop_size + 1)), int(rng.integers(0, width - crop_size + 1))


def ensure_min_size(frames: np.ndarray, crop_size: int) -> np.ndarray:
    """Upscale frames smaller than the crop (e.g. a store decoded at 64px for a 224px model)."""
    return resize_short_side(frames, crop_size) if min(frames.shape[1:3]) < crop_size else frames


def normalize(frames: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``[T, H, W, 3]`` -> float ``[T, 3, H, W]``, ``(x / 255 - mean) / std`` per channel."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (x - mean_t) / std_t
