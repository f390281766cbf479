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
from madapter.models.backbone import LevelInfo
from madapter.models.build import build_model
from madapter.models.classifier import VideoClassifier
from madapter.models.headless import FeatureClassifier, build_feature_classifier

logger = logging.getLogger(__name__)

FORMAT = "madapter-checkpoint/1"
IDENTITY_KEYS = ("name", "weights_digest", "levels", "tuning", "level_pool")
"""What :func:`describe_backbone` says about a backbone, compared field by field (a field an older
checkpoint or ``features.json`` lacks counts as ``None``: ``level_pool`` did not exist then)."""


UNUSED_LEGACY_KEYS = frozenset(f"adapter.adapters.0.fusion.{layer}.{param}"
                               for layer in ("mix", "gate") for param in ("weight", "bias"))
"""Before issue 19 the first M-adapter level also built a ``concat``/``gated`` combiner although it has
no previous output to combine (never used, never trained; it broke DDP): checkpoints of that time still
hold it, so exactly these keys are dropped on load (the rest is checked strictly)."""


def _without_unused_legacy_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k not in UNUSED_LEGACY_KEYS}


class CheckpointError(ValueError):
    """A checkpoint that cannot be used (wrong format, or a model it was not trained for)."""


def describe_backbone(model: VideoClassifier) -> dict[str, Any]:
    """The identity of what a model's head is fed: backbone name, weights digest, tapped levels,
    tuning mode, and the pooling of the level grids (``model.level_pool``; the branch accepts any
    grid size, so a head trained on 4x4 grids would silently run on 14x14 ones without this field)."""
    return {
        "name": model.backbone.name,
        "weights_digest": model.backbone.weights_digest,
        "levels": list(model.backbone.level_indices),
        "tuning": model.tuning,
        "level_pool": model.level_pool,
    }


def write_checkpoint(
    path: str | Path,
    trainable_state: dict[str, torch.Tensor],
    model_cfg: ModelSection,
    backbone: dict[str, Any],
    classes: list[str],
    extra: dict[str, Any] | None = None,
) -> Path:
    """THE checkpoint payload, written atomically (temp file + rename): trainable weights plus what
    rebuilds the rest (the ``model`` params and the backbone identity the weights were trained on)."""
    path = Path(path)
    payload = {
        "format": FORMAT,
        "model_cfg": model_cfg.model_dump(mode="json"),
        "backbone": dict(backbone),
        "classes": list(classes),
        "trainable_state_dict": trainable_state,
        "extra": dict(extra or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def save_checkpoint(
    path: str | Path,
    model: VideoClassifier | FeatureClassifier,
    classes: list[str],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model``'s trainable weights + rebuild information (``model.config``, its backbone identity).

    A :class:`FeatureClassifier` (trained on cached features) has no backbone: the identity
    recorded is the one its features were computed with, so :func:`load_checkpoint` rebuilds the
    same full model either way.
    """
    return write_checkpoint(path, model.trainable_state_dict(), model.config, backbone_identity(model), classes, extra)


def backbone_identity(model: VideoClassifier | FeatureClassifier) -> dict[str, Any]:
    """:func:`describe_backbone` of a full model; the features' backbone for a head trained on them."""
    if isinstance(model, FeatureClassifier):
        return dict(model.backbone_identity)
    return describe_backbone(model)


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


def check_compatible(ckpt: dict[str, Any], model: VideoClassifier | FeatureClassifier,
                     source: str = "checkpoint") -> None:
    """Fail with one line naming the field when ``model`` is not what ``ckpt`` was trained on."""
    check_identity(ckpt["backbone"], backbone_identity(model), source, "the model has")


def check_identity(want: dict[str, Any], have: dict[str, Any], source: str, other: str) -> None:
    """One line naming the first backbone field (name, weights digest, levels, tuning, level_pool) that
    differs (``other``: who has ``have``, e.g. ``"the model has"``)."""
    for key in IDENTITY_KEYS:
        if want.get(key) != have.get(key):
            raise CheckpointError(f"{source} was trained with backbone {key} {want.get(key)!r} but {other} "
                                  f"{have.get(key)!r}")


def load_checkpoint(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    model: VideoClassifier | None = None,
    backbone_weights: str | Path | None = None,
) -> tuple[VideoClassifier, dict[str, Any]]:
    """Rebuild the model a checkpoint was trained with (or check ``model`` against it) and load it.

    ``backbone_weights``: a local copy of the backbone weights the checkpoint was trained with (what a
    registered model carries), used instead of the hub or the ``model.weights_file`` it names, which
    may not exist where the model is loaded.  A copy of a ``model.weights_file`` must have the same
    sha256 (the identity check below compares it); an export of HUB weights has its own bytes, so
    the caller vouches for it (the registry records its sha256 and checks it before passing it).
    """
    ckpt = read_checkpoint(path, map_location)
    if model is None:
        cfg = ModelSection.model_validate(ckpt["model_cfg"])
        if backbone_weights is not None:
            cfg = cfg.model_copy(update={"weights_file": Path(backbone_weights), "pretrained": False})
        model = build_model(cfg, num_classes=len(ckpt["classes"]))
        trained_on = str(ckpt["backbone"].get("weights_digest") or "")
        if backbone_weights is not None and trained_on.startswith("timm:"):
            model.backbone.weights_digest = trained_on
    check_compatible(ckpt, model, source=f"checkpoint {path}")
    model.load_trainable_state_dict(_without_unused_legacy_keys(ckpt["trainable_state_dict"]))
    return model, ckpt


def load_head_checkpoint(
    path: str | Path,
    levels: list[LevelInfo],
    pooled_dim: int,
    backbone: dict[str, Any],
    map_location: str | torch.device = "cpu",
) -> tuple[FeatureClassifier, dict[str, Any]]:
    """Only the head of a checkpoint, for cached features of ``backbone`` shaped ``levels``/``pooled_dim``.

    ``backbone`` is the identity the features were computed with (``features.json``); a checkpoint
    trained on another backbone is refused with one line naming the field.  No backbone is built.
    """
    ckpt = read_checkpoint(path, map_location)
    check_identity(ckpt["backbone"], backbone, f"checkpoint {path}", "the features have")
    cfg = ModelSection.model_validate(ckpt["model_cfg"])
    head = build_feature_classifier(cfg, levels, pooled_dim, len(ckpt["classes"]), backbone)
    head.load_trainable_state_dict(_without_unused_legacy_keys(ckpt["trainable_state_dict"]))
    return head, ckpt
