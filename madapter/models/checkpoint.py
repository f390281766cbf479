"""Checkpoints that hold only what training changed, plus what rebuilds the rest.

A madapter checkpoint of a ViT-B branch is a few MB instead of the backbone's 350 MB: the
backbone is rebuilt from its name, level set and weights (checked by digest), and only the
trainable tensors are stored.  Loading into a model built on another backbone fails with a
message saying which field differs.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from madapter.config import ModelSection
from madapter.fileio import atomic_path
from madapter.models.build import build_model
from madapter.models.classifier import VideoClassifier

logger = logging.getLogger(__name__)

FORMAT = "madapter-checkpoint/1"


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (wrong format, or a model it was not trained for)."""


def describe_backbone(model: VideoClassifier) -> dict[str, Any]:
    """The identity of a model's backbone: name, weights digest, tapped levels, tuning mode."""
    return {
        "name": model.backbone.name,
        "weights_digest": model.backbone.weights_digest,
        "levels": list(model.backbone.level_indices),
        "tuning": model.tuning,
    }


def save_checkpoint(
    path: str | Path,
    model: VideoClassifier,
    classes: list[str],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write trainable weights + rebuild information (``model.config``) atomically (temp file + rename)."""
    path = Path(path)
    payload = {
        "format": FORMAT,
        "model_cfg": model.config.model_dump(mode="json"),
        "backbone": describe_backbone(model),
        "classes": list(classes),
        "trainable_state_dict": model.trainable_state_dict(),
        "extra": dict(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read and sanity-check a checkpoint file without building a model."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(err).__name__})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a madapter checkpoint (expected format {FORMAT})")
    return ckpt


def check_compatible(ckpt: dict[str, Any], model: VideoClassifier, source: str = "checkpoint") -> None:
    """Fail with one line naming the field when ``model`` is not what ``ckpt`` was trained on."""
    want, have = ckpt["backbone"], describe_backbone(model)
    for key in ("name", "weights_digest", "levels", "tuning"):
        if want[key] != have[key]:
            raise CheckpointError(
                f"{source} was trained with backbone {key} {want[key]!r} but the model has {have[key]!r}"
            )


def load_checkpoint(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    model: VideoClassifier | None = None,
) -> tuple[VideoClassifier, dict[str, Any]]:
    """Rebuild the model a checkpoint was trained with (or check ``model`` against it) and load it."""
    ckpt = read_checkpoint(path, map_location)
    if model is None:
        cfg = ModelSection.model_validate(ckpt["model_cfg"])
        model = build_model(cfg, num_classes=len(ckpt["classes"]))
    check_compatible(ckpt, model, source=f"checkpoint {path}")
    model.load_trainable_state_dict(ckpt["trainable_state_dict"])
    return model, ckpt
