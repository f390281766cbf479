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


def _replace(model: nn.Module, kind: type[nn.Module], variant: Callable[[nn.Module], nn.Module]) -> None:
    """Every submodule of type ``kind`` swapped for ``variant(it)`` in place."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, kind):
                setattr(module, name, variant(child))


def temporal_conv_act_proj(model: nn.Module) -> None:
    """Every level's temporal module becomes :class:`ConvActProj` (same operator, no MLP)."""
    _replace(model, TemporalModule, ConvActProj)


def attention_position_init_002(model: nn.Module) -> None:
    """Temporal attention's frame position embeddings re-drawn at std 0.02 (timm's usual, and this
    package's before its :data:`~madapter.models.madapter.POSITION_INIT_STD`)."""
    for module in model.modules():
        if isinstance(module, TemporalAttention):
            nn.init.trunc_normal_(module.pos, std=0.02)


class RelativeBiasAttention(nn.Module):
    """:class:`TemporalAttention` with a learned bias per head and frame pair added to the attention
    logits: where frame ``t`` looks can depend on position alone, so "the next frame minus this one"
    (a motion cue) is one bias away, instead of having to come out of content dot products."""

    def __init__(self, built: TemporalAttention, std: float = 1.0) -> None:
        super().__init__()
        self.pos, self.attn = built.pos, built.attn
        frames = built.pos.shape[1]
        self.bias = nn.Parameter(torch.randn(built.attn.num_heads, frames, frames) * std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B,T,H,W,d], T as built
        b, t, hgt, wid, d = x.shape
        seq = x.permute(0, 2, 3, 1, 4).reshape(b * hgt * wid, t, d) + self.pos
        out, _ = self.attn(seq, seq, seq, attn_mask=self.bias.repeat(b * hgt * wid, 1, 1), need_weights=False)
        return out.reshape(b, hgt, wid, t, d).permute(0, 3, 1, 2, 4)


def attention_relative_bias(model: nn.Module) -> None:
    """Every :class:`TemporalAttention` becomes :class:`RelativeBiasAttention` (same weights, plus the bias)."""
    _replace(model, TemporalAttention, RelativeBiasAttention)


def pytorch_default_init(model: nn.Module) -> None:
    """Every trainable linear, convolution and norm of the branch re-drawn with PyTorch's own defaults
    (Kaiming-uniform weights, as the minimal side branch gets by not choosing), in place of the
    package's timm-style truncated normal at std 0.02."""
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Conv1d | nn.Conv3d | nn.LayerNorm) and all(
                p.requires_grad for p in module.parameters(recurse=False)):
            module.reset_parameters()


EDITS: dict[str, Callable[[nn.Module], None]] = {
    "temporal_conv_act_proj": temporal_conv_act_proj,
    "attention_position_init_0.02": attention_position_init_002,
    "pytorch_default_init": pytorch_default_init,
    "attention_relative_bias": attention_relative_bias,
}
"""What a job's ``edit`` may name."""
