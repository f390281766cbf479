"""Pieces of the baselines the paper compares against, built from the same backbone.

* ``linear``: frozen backbone, per-frame pooled feature averaged over time, one linear layer.
* ``full``: the same head, but every backbone weight is trained (full fine-tuning).
* ``inserted``: ST-Adapter/AIM-style bottleneck adapters inserted *inside* every backbone
  block (backbone weights frozen, but activations and gradients flow through the backbone,
  which is exactly the memory cost M-adapter avoids).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from madapter.models.backbone import Backbone


class PooledLinearHead(nn.Module):
    """Mean of the backbone's pooled per-frame features over time, then a linear layer."""

    def __init__(self, dim: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def forward(self, levels: list[torch.Tensor], pooled: torch.Tensor) -> torch.Tensor:  # noqa: ARG002
        return self.head(self.drop(pooled.mean(dim=1)))


@dataclass
class FrameContext:
    """Frame count of the clip being processed, shared by every inserted adapter.

    Inserted adapters see ``[B*T, ...]`` activations in the middle of the backbone and need
    ``T`` to fold time back out; the classifier sets it before each backbone call.
    """

    num_frames: int = 1


class TemporalBottleneckAdapter(nn.Module):
    """ST-Adapter: ``x + up(dwconv_t(down(x)))`` on the spatial tokens of one block's input.

    ``up`` starts at zero, so the adapted backbone initially computes exactly the frozen one.
    Works on ViT tokens ``[N, L, D]`` (prefix tokens pass through untouched) and CNN maps
    ``[N, C, H, W]``.
    """

    def __init__(self, channels: int, bottleneck: int, context: FrameContext, num_prefix_tokens: int = 0) -> None:
        super().__init__()
        self.context = context
        self.num_prefix_tokens = num_prefix_tokens
        self.down = nn.Linear(channels, bottleneck)
        self.conv = nn.Conv2d(bottleneck, bottleneck, kernel_size=(3, 1), padding=(1, 0), groups=bottleneck)
        self.up = nn.Linear(bottleneck, channels)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def _adapt(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens`` [B*T, L, C] -> the residual update of the same shape."""
        t = self.context.num_frames
        n, length, _ = tokens.shape
        z = self.down(tokens).reshape(n // t, t, length, -1).permute(0, 3, 1, 2)  # [B, r, T, L]
        z = self.conv(z).permute(0, 2, 3, 1).reshape(n, length, -1)
        return self.up(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:  # CNN map
            tokens = x.flatten(2).transpose(1, 2)
            return x + self._adapt(tokens).transpose(1, 2).reshape(x.shape)
        p = self.num_prefix_tokens
        update = self._adapt(x[:, p:])
        return torch.cat([x[:, :p], x[:, p:] + update], dim=1)


class AdaptedBlock(nn.Module):
    """A backbone block with an adapter applied to its input."""

    def __init__(self, block: nn.Module, adapter: TemporalBottleneckAdapter) -> None:
        super().__init__()
        self.block = block
        self.adapter = adapter

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return self.block(self.adapter(x), *args, **kwargs)


def _block_slots(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(parent, child-name) of every residual block, for ViT-, ConvNeXt- and ResNet-style timm models."""
    if isinstance(getattr(model, "blocks", None), nn.Sequential | nn.ModuleList):
        return [(model.blocks, name) for name, _ in model.blocks.named_children()]
    if isinstance(getattr(model, "stages", None), nn.Sequential | nn.ModuleList):
        return [(s.blocks, name) for s in model.stages if hasattr(s, "blocks") for name, _ in s.blocks.named_children()]
    layers = [getattr(model, f"layer{i}") for i in range(1, 5) if hasattr(model, f"layer{i}")]
    if layers:
        return [(layer, name) for layer in layers for name, _ in layer.named_children()]
    raise ValueError(f"model.tuning=inserted: cannot find the blocks of backbone {type(model).__name__}")


def insert_adapters(backbone: Backbone, bottleneck: int, context: FrameContext) -> int:
    """Wrap every block of ``backbone`` with a temporal bottleneck adapter; return how many.

    A dry run on one image records each block's input width, so any supported timm family
    works without per-family channel tables.
    """
    slots = _block_slots(backbone.model)
    widths: dict[int, int] = {}
    hooks = []
    for i, (parent, name) in enumerate(slots):
        def record(_m: nn.Module, args: tuple, i: int = i) -> None:
            x = args[0]
            widths[i] = x.shape[1] if x.ndim == 4 else x.shape[-1]

        hooks.append(getattr(parent, name).register_forward_pre_hook(record))
    with torch.no_grad():
        backbone(torch.zeros(1, *backbone.data_config["input_size"]), with_levels=False)
    for h in hooks:
        h.remove()
    prefix = int(getattr(backbone.model, "num_prefix_tokens", 0))
    for i, (parent, name) in enumerate(slots):
        adapter = TemporalBottleneckAdapter(widths[i], bottleneck, context, prefix)
        setattr(parent, name, AdaptedBlock(getattr(parent, name), adapter))
    return len(slots)
