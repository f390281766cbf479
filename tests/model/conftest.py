"""Tiny CPU models for the model tests (random init; no weights are downloaded)."""

from __future__ import annotations

import pytest
import torch

from madapter.config import ModelSection

VIT = "vit_tiny_patch16_224"
CNN = "resnet18"


def tiny_cfg(backbone: str = VIT, **overrides) -> ModelSection:
    """A model section for 32x32 frames: ViTs get a 2x2 token grid, ResNet18 4 levels down to 1x1."""
    img = 32 if backbone.startswith("vit") else None
    return ModelSection(backbone=backbone, img_size=img, num_frames=8, width=64, **overrides)


def clip(batch: int = 2, frames: int = 8, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, 3, size, size, generator=g)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
