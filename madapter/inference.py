"""The model side of evaluation and prediction: load a checkpoint on a device, score views.

``evaluate``, ``predict`` and the served MLflow model all go through these two functions, so a
video gets the same logits whichever of them scores it (same device rule, same view batching,
same precision: the backbone as ``model.half_precision`` says, the branch in fp32).
Evaluating on cached backbone outputs (``train.source: features``) loads only the head
(:func:`load_head`) and scores the stored views with :func:`head_view_logits`: same device rule,
same batching, the branch in fp32.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from madapter.models.backbone import LevelInfo
from madapter.models.classifier import VideoClassifier
from madapter.models.headless import FeatureClassifier
from madapter.models.precision import backbone_precision, resolve_device

logger = logging.getLogger(__name__)


def load_model(checkpoint: str | Path, device_setting: str = "auto",
               backbone_weights: str | Path | None = None) -> tuple[VideoClassifier, dict[str, Any]]:
    """Rebuild a checkpoint's model in eval mode on ``device_setting`` (``auto``/``cpu``/``cuda``).

    Weights are read on the CPU first (a checkpoint written on GPU loads anywhere), then moved.
    ``backbone_weights``: a local copy of the backbone's weights (see
    :func:`madapter.models.checkpoint.load_checkpoint`).
    """
    from madapter.models.checkpoint import load_checkpoint

    device = resolve_device(device_setting)
    model, ckpt = load_checkpoint(checkpoint, map_location="cpu", backbone_weights=backbone_weights)
    model.to(device).eval()
    logger.info("loaded %s on %s (backbone %s)", checkpoint, device,
                backbone_precision(model.half_precision, device))
    return model, ckpt


def load_head(checkpoint: str | Path, levels: list[LevelInfo], pooled_dim: int, backbone: dict[str, Any],
              device_setting: str = "auto") -> tuple[FeatureClassifier, dict[str, Any]]:
    """Only a checkpoint's head, for cached outputs of ``backbone`` (no backbone is built), in eval mode."""
    from madapter.models.checkpoint import load_head_checkpoint

    device = resolve_device(device_setting)
    head, ckpt = load_head_checkpoint(checkpoint, levels, pooled_dim, backbone, map_location="cpu")
    head.to(device).eval()
    logger.info("loaded the head of %s on %s (cached features, no backbone)", checkpoint, device)
    return head, ckpt


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def view_logits(model: torch.nn.Module, views: torch.Tensor) -> np.ndarray:
    """Logits ``[B, V, C]`` of views ``[B, V, T, 3, H, W]``: all B*V views in one batch on the model's device."""
    if views.ndim != 6:
        raise ValueError(f"expected views shaped [B, V, T, 3, H, W], got {list(views.shape)}")
    b, v = views.shape[:2]
    x = views.flatten(0, 1).to(model_device(model), non_blocking=True)
    return model(x).float().reshape(b, v, -1).cpu().numpy()


@torch.no_grad()
def head_view_logits(head: torch.nn.Module, levels: list[torch.Tensor], pooled: torch.Tensor) -> np.ndarray:
    """Logits ``[B, V, C]`` of cached views (per level ``[B, V, T, h, w, C]``, pooled ``[B, V, T, D]``),
    all B*V views in one batch on the head's device, in fp32."""
    if pooled.ndim != 4:
        raise ValueError(f"expected pooled features shaped [B, V, T, D], got {list(pooled.shape)}")
    b, v = pooled.shape[:2]
    device = model_device(head)

    def flat(t: torch.Tensor) -> torch.Tensor:
        return t.flatten(0, 1).to(device, torch.float32, non_blocking=True)

    return head([flat(level) for level in levels], flat(pooled)).float().reshape(b, v, -1).cpu().numpy()
