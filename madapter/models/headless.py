"""The trainable head alone, for training and evaluating on cached backbone outputs.

With a frozen backbone (``model.tuning`` ``madapter`` or ``linear``) the backbone's outputs for a
view never change, so the ``features`` stage computes them once and ``train.source: features``
trains on them (:mod:`madapter.data.features.dataset`).  The model that trains is then only the
head: :class:`FeatureClassifier` holds the same ``adapter`` :func:`madapter.models.build.build_model`
would build (:func:`~madapter.models.build.build_head`), under the same name, so

* its ``state_dict`` keys are exactly :meth:`VideoClassifier.trainable_state_dict`'s (``adapter.*``),
* the checkpoint it writes (:func:`madapter.models.checkpoint.save_checkpoint`) is the usual one,
  and :func:`~madapter.models.checkpoint.load_checkpoint` rebuilds the FULL model from it
  (backbone + head) for ``predict`` and serving: the backbone identity it records is the one the
  features were computed with (``features.json``'s ``backbone``).

No backbone is ever built here: a worker training on features holds a few MB of parameters.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from madapter.config import ModelSection
from madapter.models.backbone import LevelInfo
from madapter.models.build import build_head
from madapter.models.classifier import FROZEN_MODES, load_exact_state


class FeatureClassifier(nn.Module):
    """``forward(levels, pooled) -> logits``: the head of a frozen-backbone model, on cached outputs.

    ``levels``: per tapped level ``[B, T, h_l, w_l, C_l]`` (empty for ``linear``); ``pooled``:
    ``[B, T, D]``; what :meth:`VideoClassifier.extract` would give -- already pooled to
    ``model.level_pool`` when it is set, since the features stage stores ``extract``'s output, so
    nothing is pooled here.  Every parameter is trainable.
    """

    def __init__(self, adapter: nn.Module, config: ModelSection, backbone_identity: dict[str, Any]) -> None:
        super().__init__()
        self.adapter = adapter
        self.config = config
        """The ``model`` params (checkpoints store it; the full model is rebuilt from it)."""
        self.tuning = config.tuning
        self.backbone_identity = dict(backbone_identity)
        """:func:`~madapter.models.checkpoint.describe_backbone` of the backbone the features came from."""
        self.uses_levels = config.tuning == "madapter"

    def no_weight_decay(self) -> set[str]:
        """The adapter's no-decay names, prefixed as in :meth:`VideoClassifier.no_weight_decay`."""
        own = getattr(self.adapter, "no_weight_decay", None)
        return {f"adapter.{name}" for name in own()} if callable(own) else set()

    def forward(self, levels: list[torch.Tensor], pooled: torch.Tensor) -> torch.Tensor:
        return self.adapter(levels, pooled)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """All of it (``adapter.*``): the keys a :class:`VideoClassifier` of the same config trains."""
        return {k: v.detach().clone() for k, v in self.state_dict().items()}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load trainable weights; any missing or unknown key is an error (no silent partial loads)."""
        load_exact_state(self, set(self.state_dict()), state, "head")


def build_feature_classifier(cfg: ModelSection, levels: list[LevelInfo], pooled_dim: int, num_classes: int,
                             backbone_identity: dict[str, Any]) -> FeatureClassifier:
    """The head of ``cfg.tuning`` for cached outputs shaped like ``levels`` / ``pooled_dim`` (no backbone).

    Built from the same seed, it starts from the same weights as :func:`build_model`'s adapter
    (the backbone's random init does not touch the global RNG).
    """
    if cfg.tuning not in FROZEN_MODES:
        raise ValueError(
            f"model.tuning: {cfg.tuning} trains the backbone, so it cannot train on cached features "
            f"(use madapter or linear, or train.source: frames)"
        )
    head = build_head(cfg, list(levels) if cfg.tuning == "madapter" else [], pooled_dim, num_classes)
    return FeatureClassifier(head, cfg, backbone_identity)
