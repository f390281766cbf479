"""Model edits the ablations need and the package does not offer: each turns a freshly built branch
into a variant before training, so everything else about it (its seed, its init) stays the baseline's.

They exist to diagnose the branch (issue: "a branch that learns order every time"), not as options
for users: a variant that wins moves into :mod:`madapter.models.madapter` as a real setting.  A job
names its edit (``"edit": "temporal_conv_act_proj"``), :func:`benchmarks.trainer.train_run` applies it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from madapter.models.madapter import TemporalAttention, TemporalModule


class ConvActProj(nn.Module):
    """``x + proj(GELU(op(norm(x))))``: the minimal side branch's temporal block (a non-linearity right
    after the temporal operator, then a projection, in one residual), in place of the package's
    ``x + op(norm(x))`` followed by a residual MLP.  Reuses the built module's operator and norm."""

    def __init__(self, built: TemporalModule) -> None:
        super().__init__()
        self.op, self.norm = built.op, built.norm1
        width = built.norm2.normalized_shape[0]
        self.proj = nn.Linear(width, width)
        nn.init.trunc_normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(nn.functional.gelu(self.op(self.norm(x))))


def temporal_conv_act_proj(model: nn.Module) -> None:
    """Every level's temporal module becomes :class:`ConvActProj` (same operator, no MLP)."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, TemporalModule):
                setattr(module, name, ConvActProj(child))


def attention_position_init_002(model: nn.Module) -> None:
    """Temporal attention's frame position embeddings re-drawn at std 0.02 (timm's usual, and this
    package's before its :data:`~madapter.models.madapter.POSITION_INIT_STD`)."""
    for module in model.modules():
        if isinstance(module, TemporalAttention):
            nn.init.trunc_normal_(module.pos, std=0.02)


EDITS: dict[str, Callable[[nn.Module], None]] = {
    "temporal_conv_act_proj": temporal_conv_act_proj,
    "attention_position_init_0.02": attention_position_init_002,
}
"""What a job's ``edit`` may name."""
