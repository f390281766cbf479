"""The M-adapter branch: one (fusion -> temporal) adapter per backbone level, chained.

Our reading of the paper (only its abstract is public; see docs/model.md)::

    h_0 = none
    h_l = Temporal_l( Fusion_l(X_l, h_{l-1}) )        l = 1..L
    logits = Head( pool(h_L) [, frozen final CLS] )

Tensors inside the branch are channels-last token grids ``[B, T, H, W, d]``: LayerNorm and
Linear work on the last axis without copies, the depthwise 3-D convolution reads the same
memory as channels-last-3d, and CNN levels (a different grid per level) and ViT levels (one
grid) are handled the same way.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from madapter.models.backbone import LevelInfo


def _init_linear(module: nn.Module) -> None:
    """timm-style init: small truncated-normal weights, zero bias (keeps early logits near zero)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def resample_grid(h: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bring ``h`` [N,H,W,d] onto another token grid: average-pool when shrinking, else bilinear."""
    if tuple(h.shape[1:3]) == tuple(size):
        return h
    grid = h.permute(0, 3, 1, 2)
    if h.shape[1] >= size[0] and h.shape[2] >= size[1]:
        grid = F.adaptive_avg_pool2d(grid, size)
    else:
        grid = F.interpolate(grid, size=size, mode="bilinear", align_corners=False)
    return grid.permute(0, 2, 3, 1)


class Fusion(nn.Module):
    """Project level ``X_l`` to the branch width and combine it with the previous adapter output.

    This is where the gap between the image pre-training and the video target is "digested":
    LayerNorm + linear projection per token, then one of three combinations with ``h_{l-1}``
    (resampled to this level's grid): ``add``, ``concat`` (concat + linear), or ``gated``
    (a per-channel sigmoid gate computed from both inputs decides how much of ``X_l`` enters).

    The first level (``first=True``) has no ``h_0`` to combine with, so it has no combiner
    either: a ``mix``/``gate`` layer there would never get a gradient, which DDP with
    ``find_unused_parameters=False`` (how training wraps the branch) refuses at the second step.
    """

    def __init__(self, in_channels: int, width: int, kind: str = "add", first: bool = False) -> None:
        super().__init__()
        if kind not in ("add", "concat", "gated"):
            raise ValueError(f"model.fusion: unknown fusion kind '{kind}' (add, concat, gated)")
        self.kind = kind
        self.first = first
        self.norm = nn.LayerNorm(in_channels)
        self.proj = nn.Linear(in_channels, width)
        if kind == "concat" and not first:
            self.mix = nn.Linear(2 * width, width)
        elif kind == "gated" and not first:
            self.gate = nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
        """``x`` [B,T,H,W,C] level output, ``prev`` [B,T,H',W',d] (None at the first level) -> [B,T,H,W,d]."""
        if (prev is None) != self.first:
            raise ValueError(
                "Fusion: the first level takes no previous output" if self.first
                else "Fusion: a level after the first needs the previous adapter output (got None)"
            )
        tokens = self.proj(self.norm(x))
        if prev is None:
            return tokens
        b, t, hgt, wid, _ = x.shape
        prev = resample_grid(prev.flatten(0, 1), (hgt, wid)).unflatten(0, (b, t))
        if self.kind == "add":
            return tokens + prev
        if self.kind == "concat":
            return self.mix(torch.cat([tokens, prev], dim=-1))
        gate = torch.sigmoid(self.gate(torch.cat([tokens, prev], dim=-1)))
        return prev + gate * tokens


class TemporalConv(nn.Module):
    """Depthwise 3-D convolution over (time, height, width) of the token grid.

    Cheap (``d * k * 3 * 3`` weights) and, because its kernel is not symmetric in time, it
    responds differently to a clip and its time-reversed copy.  The ``[B,T,H,W,d]`` grid is
    viewed as ``[B,d,T,H,W]`` in channels-last-3d layout, which the convolution consumes
    without a copy.
    """

    def __init__(self, width: int, kernel: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv3d(width, width, (kernel, 3, 3), padding=(kernel // 2, 1, 1), groups=width)
        # Same layout as the gradients a channels-last input produces (DDP buckets expect it).
        self.conv.to(memory_format=torch.channels_last_3d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B,T,H,W,d]
        return self.conv(x.permute(0, 4, 1, 2, 3)).permute(0, 2, 3, 4, 1)


POSITION_INIT_STD = 0.5
"""Initial scale of :class:`TemporalAttention`'s frame position embeddings, against tokens that
arrive layer-normed (unit scale).  Without them attention is blind to order (it permutes with the
frames), and the part of its output that depends on order starts at about this fraction of the
whole.  At timm's usual 0.02 that part was 2%, and the branch barely learned order: on the
accuracy benchmark's order set, 0.389 +- 0.012 test top-1 against 0.757 +- 0.012 at 0.5 (3 seeds,
docs/benchmarks.md, ablations).  Chosen from one sweep of the scale (5 seeds, lr 1e-3): 0.83 at
0.5, 0.81 at 1.0, 0.77 at 2.0."""


class TemporalAttention(nn.Module):
    """Self-attention across the T frames at every token position, with temporal position embeddings.

    The position embedding is linearly resampled when a clip has a different frame count than
    the model was built for (e.g. T=4 at evaluation of a T=8 model).  It starts at
    :data:`POSITION_INIT_STD`, not near zero: it is attention's only source of order.
    """

    def __init__(self, width: int, num_frames: int, num_heads: int | None = None) -> None:
        super().__init__()
        heads = num_heads or max(1, width // 64)
        while width % heads:
            heads -= 1
        self.pos = nn.Parameter(torch.zeros(1, num_frames, width))
        nn.init.trunc_normal_(self.pos, std=POSITION_INIT_STD)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)

    def _pos_for(self, t: int) -> torch.Tensor:
        if t == self.pos.shape[1]:
            return self.pos
        return F.interpolate(self.pos.transpose(1, 2), size=t, mode="linear", align_corners=False).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B,T,H,W,d]
        b, t, hgt, wid, d = x.shape
        seq = x.permute(0, 2, 3, 1, 4).reshape(b * hgt * wid, t, d) + self._pos_for(t)
        out, _ = self.attn(seq, seq, seq, need_weights=False)
        return out.reshape(b, hgt, wid, t, d).permute(0, 3, 1, 2, 4)


class TemporalModule(nn.Module):
    """Relate the T frames: ``x + op(norm(x))`` then a pointwise MLP, both residual.

    The MLP's non-linearity matters: without it, mean pooling after a *linear* temporal
    operator would average the order information away.  ``kind='none'`` keeps only the MLP,
    which makes the branch blind to frame order (an ablation).
    """

    def __init__(self, width: int, kind: str = "conv", num_frames: int = 8, kernel: int = 3, mlp_ratio: float = 2.0):
        super().__init__()
        self.kind = kind
        if kind == "conv":
            self.op: nn.Module = TemporalConv(width, kernel)
        elif kind == "attention":
            self.op = TemporalAttention(width, num_frames)
        elif kind == "none":
            self.op = nn.Identity()
        else:
            raise ValueError(f"model.temporal: unknown temporal kind '{kind}' (conv, attention, none)")
        self.norm1 = nn.LayerNorm(width) if kind != "none" else nn.Identity()
        self.norm2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B,T,H,W,d]
        if self.kind != "none":
            x = x + self.op(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MAdapter(nn.Module):
    """One level's adapter: ``Temporal(Fusion(X_l, h_{l-1}))``."""

    def __init__(self, level: LevelInfo, width: int, fusion: str, temporal: str, num_frames: int, kernel: int,
                 first: bool = False) -> None:
        super().__init__()
        self.fusion = Fusion(level.channels, width, fusion, first=first)
        self.temporal = TemporalModule(width, temporal, num_frames, kernel)

    def forward(self, x: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
        return self.temporal(self.fusion(x, prev))


class MAdapterBranch(nn.Module):
    """The trainable parallel branch: chained M-adapters, pooling, and the classification head.

    Input: the frozen backbone's per-level grids ``[B,T,H_l,W_l,C_l]`` and its pooled final
    feature ``[B,T,D]``; output: logits ``[B,num_classes]``.  Nothing in here touches the
    backbone, so backpropagation stops at the branch.
    """

    def __init__(
        self,
        levels: list[LevelInfo],
        num_classes: int,
        width: int = 192,
        fusion: str = "add",
        temporal: str = "conv",
        num_frames: int = 8,
        temporal_kernel: int = 3,
        use_cls: bool = True,
        cls_dim: int = 0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.adapters = nn.ModuleList(
            MAdapter(level, width, fusion, temporal, num_frames, temporal_kernel, first=i == 0)
            for i, level in enumerate(levels)
        )
        self.use_cls = use_cls
        self.norm = nn.LayerNorm(width)
        self.cls_norm = nn.LayerNorm(cls_dim) if use_cls else None
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(width + (cls_dim if use_cls else 0), num_classes)
        self.apply(_init_linear)

    def no_weight_decay(self) -> set[str]:
        """Temporal position embeddings: decaying them pulls frame positions together (timm convention)."""
        return {name for name, _ in self.named_parameters() if name.endswith(".pos")}

    def forward_features(self, levels: list[torch.Tensor]) -> torch.Tensor:
        """Run the adapter chain; returns ``h_L`` [B,T,H,W,d]."""
        h = None
        for adapter, x in zip(self.adapters, levels, strict=True):
            h = adapter(x, h)
        return h

    def forward_head(self, h: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        feat = self.norm(h.mean(dim=(1, 2, 3)))
        if self.use_cls:
            feat = torch.cat([feat, self.cls_norm(pooled.mean(dim=1))], dim=-1)
        return self.head(self.drop(feat))

    def forward(self, levels: list[torch.Tensor], pooled: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(levels), pooled)

