"""The video classifier: backbone features -> trainable adapter -> logits.

The split between :meth:`VideoClassifier.extract` (the backbone part) and
:attr:`VideoClassifier.adapter` (the trainable part) is what lets Ray/DDP wrap only the
trainable module and never all-reduce the frozen backbone (see :mod:`madapter.train.loop`).

Frozen mode (``tuning`` in ``madapter``/``linear``), an explicit switch as in EVL:

* the backbone is registered normally (``.to()``, ``torch.compile`` and ``state_dict`` see it),
* its parameters have ``requires_grad=False``,
* it stays in eval mode even when the classifier is put in train mode (BatchNorm statistics
  and dropout of the pre-trained model never change),
* it runs under ``torch.no_grad()`` -- no activation is kept for backward, which is where the
  memory saving comes from,
* on CUDA it runs in half precision when ``model.half_precision`` is set, and otherwise in fp32
  even inside a ``train.amp`` region (:mod:`madapter.models.precision`).

``model.level_pool`` average-pools each tapped level's token grid in :meth:`VideoClassifier.extract`,
after the backbone and before the branch.  It lives in the model (not in the features stage) so
that every path feeds the branch the same grids: training on frames, the features stage (which
stores what ``extract`` returns), training and evaluating on those features, and the model
``predict`` and serving rebuild from a checkpoint (the checkpoint holds the ``model`` params).
Only ``tuning: madapter`` reads levels; the other modes return none, so it has no effect there.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from madapter.config import ModelSection
from madapter.models.backbone import Backbone
from madapter.models.baselines import FrameContext
from madapter.models.precision import backbone_autocast

FROZEN_MODES = ("madapter", "linear")


@dataclass
class Features:
    """What the backbone gives the adapter for a batch of clips."""

    levels: list[torch.Tensor]
    """Per level, channels-last ``[B, T, H_l, W_l, C_l]`` (empty for the pooled-feature baselines)."""
    pooled: torch.Tensor
    """The backbone's own pooled final feature per frame, ``[B, T, D]``."""


def pool_level_grids(levels: list[torch.Tensor], size: int | None) -> list[torch.Tensor]:
    """Average-pool (adaptive) each ``[B, T, h, w, C]`` grid to at most ``size x size`` (``None``: unchanged).

    A grid already within the bound is returned as it is (never upsampled), so CNN levels that are
    smaller than ``size`` keep their resolution; an axis is pooled only where it is larger.
    """
    if size is None:
        return levels
    pooled = []
    for x in levels:
        b, t, h, w, _ = x.shape
        if h <= size and w <= size:
            pooled.append(x)
            continue
        grid = F.adaptive_avg_pool2d(x.flatten(0, 1).permute(0, 3, 1, 2), (min(h, size), min(w, size)))
        pooled.append(grid.permute(0, 2, 3, 1).unflatten(0, (b, t)))
    return pooled


def load_exact_state(module: nn.Module, expected: set[str], state: dict[str, torch.Tensor], what: str) -> None:
    """Load ``state`` into ``module`` when its keys are exactly ``expected``; else one error line.

    The one check behind every ``load_trainable_state_dict``: a missing or unknown key means the
    weights were trained for another model, and a silent partial load would serve a half-random one.
    """
    missing, unknown = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unknown:
        raise ValueError(
            f"trainable weights do not fit this {what}: {len(missing)} missing (e.g. {missing[:1]}), "
            f"{len(unknown)} unknown (e.g. {unknown[:1]})"
        )
    module.load_state_dict(state, strict=False)  # the keys are checked above; the rest (backbone) stays


class VideoClassifier(nn.Module):
    """A frozen-or-not image backbone applied per frame plus a trainable adapter on top."""

    def __init__(
        self,
        backbone: Backbone,
        adapter: nn.Module,
        tuning: str,
        frame_context: FrameContext | None = None,
        half_precision: bool = False,
        backbone_chunk: int | None = None,
        level_pool: int | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.adapter = adapter
        self.tuning = tuning
        self.frame_context = frame_context or FrameContext()
        self.half_precision = half_precision
        self.backbone_chunk = backbone_chunk
        self.config: ModelSection | None = None
        """The ``model`` params it was built from (set by ``build_model``; checkpoints store it)."""
        self.backbone_frozen = tuning in FROZEN_MODES
        self.backbone_in_eval = tuning != "full"
        """Inserted adapters keep the pre-trained weights (and BatchNorm statistics) fixed too."""
        self.uses_levels = tuning == "madapter"
        self.level_pool = level_pool if self.uses_levels else None
        """``model.level_pool``: the bound on every level's token grid the branch sees (``None``: full
        grids; always ``None`` in a mode that reads no levels, so it is not part of its identity)."""
        if tuning != "full":
            for p in self.backbone.parameters():
                p.requires_grad_(False)
        if tuning == "inserted":  # the adapters living inside the backbone are the trainable part
            for name, p in self.backbone.named_parameters():
                if ".adapter." in name:
                    p.requires_grad_(True)
        self.train(True)

    @property
    def data_config(self) -> dict:
        """Mean/std/input size the frames must be normalised with (from timm's data config)."""
        return self.backbone.data_config

    def train(self, mode: bool = True) -> VideoClassifier:
        super().train(mode)
        if self.backbone_in_eval:
            self.backbone.eval()
        return self

    def no_weight_decay(self) -> set[str]:
        """Parameter names AdamW must not decay (timm's convention, collected from the parts).

        Position embeddings and tokens are not 1-D, so "no decay for ndim <= 1" misses them; the
        modules that own them name them (``MAdapterBranch.no_weight_decay``, timm models' own).
        """
        names: set[str] = set()
        for prefix, part in (("adapter.", self.adapter), ("backbone.", self.backbone)):
            if hasattr(part, "no_weight_decay"):
                names |= {prefix + n for n in part.no_weight_decay()}
        return names

    def extract(self, x: torch.Tensor) -> Features:
        """Run the backbone on every frame of ``x`` [B,T,3,H,W].

        In frozen mode this runs under ``no_grad``: nothing is recorded for backward, so the
        frames can go through the backbone in chunks of ``backbone_chunk`` and only one chunk's
        activations are alive at a time (chunks hold whole clips).  The levels come back in fp32,
        pooled to ``level_pool`` (:func:`pool_level_grids`) when it is set.
        """
        if x.ndim != 5:
            raise ValueError(f"expected clips shaped [B, T, 3, H, W], got {list(x.shape)}")
        b, t = x.shape[:2]
        self.frame_context.num_frames = t
        grad = contextlib.nullcontext() if not self.backbone_frozen else torch.no_grad()
        precision = backbone_autocast(self.half_precision, not self.backbone_frozen, x.device)
        with grad, precision:
            frames = x.flatten(0, 1)
            # Whole clips per chunk: inserted adapters fold [clips*T] back into [clips, T].
            clips_per_chunk = b if self.backbone_chunk is None else max(1, self.backbone_chunk // t)
            chunks = frames.split(clips_per_chunk * t)
            outputs = [self.backbone(chunk, with_levels=self.uses_levels) for chunk in chunks]
        if len(outputs) == 1:
            levels, pooled = outputs[0]
        else:
            levels = [torch.cat(per_level) for per_level in zip(*(out[0] for out in outputs), strict=True)]
            pooled = torch.cat([out[1] for out in outputs])
        return Features(
            levels=pool_level_grids([lvl.float().unflatten(0, (b, t)) for lvl in levels], self.level_pool),
            pooled=pooled.float().unflatten(0, (b, t)),
        )

    def forward_head(self, features: Features) -> torch.Tensor:
        return self.adapter(features.levels, features.pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` float [B,T,3,H,W], normalised with :attr:`data_config` -> logits [B, num_classes]."""
        return self.forward_head(self.extract(x))

    def trainable_names(self) -> set[str]:
        """State-dict keys that training changes (the only ones a checkpoint must hold)."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        for n, _ in self.named_buffers():
            if not n.startswith("backbone.") or not self.backbone_in_eval:
                names.add(n)
        return names

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        keep = self.trainable_names()
        return {k: v.detach().clone() for k, v in self.state_dict().items() if k in keep}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load trainable weights; any missing or unknown key is an error (no silent partial loads)."""
        load_exact_state(self, self.trainable_names(), state, "model")
