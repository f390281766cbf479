"""Precision switches, device choice and weight-decay groups (the parts a CPU can check).

What only a GPU can show (bf16 backbone kernels, NCCL) is checked by ``make gpu-check``; here the
rules themselves are pinned: which switch governs which part, that ``auto`` resolves to the CPU on
this machine, that asking for CUDA without one is a one-line error naming the key, and that
position embeddings are never decayed.
"""

from __future__ import annotations

import pytest
import torch

from madapter.models.build import build_model
from madapter.models.precision import (
    amp_dtype,
    backbone_autocast_kwargs,
    backbone_precision,
    describe_precision,
    grad_scaler,
    resolve_device,
)
from madapter.train.optim import param_groups
from tests.model.conftest import tiny_cfg

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_auto_device_is_cpu_without_cuda_and_cuda_without_a_gpu_names_the_key() -> None:
    assert not torch.cuda.is_available()  # this suite runs on CPU machines
    assert resolve_device("auto") == CPU
    assert resolve_device("cpu") == CPU
    with pytest.raises(ValueError, match=r"^evaluate\.device: cuda .* set evaluate\.device: auto or cpu$"):
        resolve_device("cuda")


@pytest.mark.parametrize("half", [False, True])
@pytest.mark.parametrize("amp", ["none", "bf16", "fp16"])
def test_switches_are_independent_and_cpu_runs_fp32(half: bool, amp: str) -> None:
    cpu = describe_precision(half, amp, CPU)
    assert cpu == {"device": "cpu", "backbone_precision": "fp32", "train_amp": amp, "train_amp_effective": "fp32"}
    assert amp_dtype(amp, CPU) is None
    assert amp_dtype(amp, CUDA) == {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    assert not grad_scaler(amp, CPU).is_enabled()


def test_frozen_backbone_is_fp32_inside_an_amp_region_unless_half_precision() -> None:
    """The bug this pins: a bf16 region around the whole forward used to lower the frozen backbone too."""
    assert backbone_autocast_kwargs(False, trainable_backbone=False, device=CUDA) == {
        "device_type": "cuda", "enabled": False}
    half = backbone_autocast_kwargs(True, trainable_backbone=False, device=CUDA)
    assert half is not None and half["dtype"] in (torch.bfloat16, torch.float16) and "enabled" not in half
    # full/inserted train the backbone: without half_precision it follows train.amp (inherits the region)
    assert backbone_autocast_kwargs(False, trainable_backbone=True, device=CUDA) is None
    assert backbone_autocast_kwargs(True, trainable_backbone=False, device=CPU) == {"device_type": "cpu", "enabled": False}
    assert backbone_precision(True, CPU) == "fp32"


def test_backbone_output_dtype_follows_half_precision_not_the_cpu_amp_region() -> None:
    """On CPU an autocast region around the model must not change the frozen backbone's features."""
    model = build_model(tiny_cfg(), num_classes=3).eval()
    x = torch.randn(1, 8, 3, 32, 32)
    plain = model.extract(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = model.extract(x)
    assert plain.pooled.dtype == inside.pooled.dtype == torch.float32
    assert torch.equal(plain.pooled, inside.pooled)


def _group_of(model: torch.nn.Module, name: str, groups: list[dict]) -> float:
    param = dict(model.named_parameters())[name]
    (decay,) = [g["weight_decay"] for g in groups if any(p is param for p in g["params"])]
    return decay


def test_temporal_position_embedding_is_not_decayed() -> None:
    model = build_model(tiny_cfg(temporal="attention"), num_classes=3)
    pos = [n for n in model.no_weight_decay() if n.startswith("adapter.")]
    assert pos and all(n.endswith(".pos") for n in pos)
    groups = param_groups(model, weight_decay=0.05)
    for name in pos:
        assert dict(model.named_parameters())[name].ndim == 3  # the ndim rule alone would decay it
        assert _group_of(model, name, groups) == 0.0
    weights = [n for n, p in model.named_parameters() if p.requires_grad and p.ndim == 2]
    assert weights and all(_group_of(model, n, groups) == 0.05 for n in weights)


def test_full_tuning_keeps_timm_no_decay_names_of_the_backbone() -> None:
    model = build_model(tiny_cfg(tuning="full"), num_classes=3)
    groups = param_groups(model, weight_decay=0.05)
    for name in ("backbone.model.pos_embed", "backbone.model.cls_token"):
        assert name in model.no_weight_decay()
        assert _group_of(model, name, groups) == 0.0
