"""Shapes for every tuning mode, and the frozen-backbone contract of DESIGN.md section 1."""

from __future__ import annotations

import pytest
import torch

from madapter.models.build import build_model, count_parameters

from .conftest import CNN, VIT, clip, tiny_cfg

MODES = ["madapter", "linear", "full", "inserted"]


@pytest.mark.parametrize("backbone", [VIT, CNN])
@pytest.mark.parametrize("tuning", MODES)
def test_output_shape_for_every_mode_and_frame_count(backbone: str, tuning: str) -> None:
    model = build_model(tiny_cfg(backbone, tuning=tuning), num_classes=7)
    for frames in (1, 4, 8):
        logits = model(clip(batch=2, frames=frames))
        assert logits.shape == (2, 7)
        assert torch.isfinite(logits).all()


@pytest.mark.parametrize("backbone", [VIT, CNN])
def test_levels_default_to_four_evenly_spaced_including_last(backbone: str) -> None:
    model = build_model(tiny_cfg(backbone), num_classes=3)
    feats = model.extract(clip(frames=4))
    depth = model.backbone.depth
    assert len(feats.levels) == 4 and model.backbone.level_indices[-1] == depth - 1
    for level, info in zip(feats.levels, model.backbone.levels, strict=True):
        assert level.shape[:2] == (2, 4) and level.shape[-1] == info.channels
    assert feats.pooled.shape == (2, 4, model.backbone.num_features)


def test_chosen_levels_and_ablation_switches() -> None:
    for fusion in ("add", "concat", "gated"):
        for temporal in ("conv", "attention", "none"):
            model = build_model(tiny_cfg(levels=[-1], fusion=fusion, temporal=temporal), num_classes=3)
            assert model.backbone.level_indices == [11]
            assert model(clip(frames=4)).shape == (2, 3)
    with pytest.raises(ValueError, match="model.levels: block index 12"):
        build_model(tiny_cfg(levels=[12]), num_classes=3)


@pytest.mark.parametrize("tuning", ["madapter", "linear"])
@pytest.mark.parametrize("backbone", [VIT, CNN])
def test_frozen_backbone_gets_no_gradient_and_never_changes(backbone: str, tuning: str) -> None:
    model = build_model(tiny_cfg(backbone, tuning=tuning), num_classes=2)
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    model.train()
    assert not model.backbone.training, "backbone must stay in eval mode inside a training model"
    assert model.adapter.training
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    for step in range(3):
        loss = torch.nn.functional.cross_entropy(model(clip(seed=step)), torch.tensor([0, 1]))
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is None for p in model.backbone.parameters())
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.adapter.parameters())
        opt.step()
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "frozen backbone weights changed"


@pytest.mark.parametrize("tuning", ["madapter", "linear"])
def test_frozen_backbone_runs_without_autograd(tuning: str) -> None:
    """No backbone activation may be kept for backward: assert grad mode inside every block."""
    model = build_model(tiny_cfg(tuning=tuning), num_classes=2).train()
    seen: list[bool] = []
    hooks = [b.register_forward_hook(lambda *_: seen.append(torch.is_grad_enabled())) for b in model.backbone.model.blocks]
    feats = model.extract(clip())
    for h in hooks:
        h.remove()
    assert seen and not any(seen)
    assert all(lvl.grad_fn is None for lvl in feats.levels) and feats.pooled.grad_fn is None
    # The trainable part still builds a graph.
    assert model.forward_head(feats).grad_fn is not None


def test_full_and_inserted_let_gradients_through_the_backbone() -> None:
    full = build_model(tiny_cfg(tuning="full"), num_classes=2)
    full(clip()).sum().backward()
    assert all(p.grad is not None for p in full.backbone.parameters())
    assert full.train().backbone.training

    inserted = build_model(tiny_cfg(tuning="inserted"), num_classes=2)
    inserted.train()
    inserted(clip()).sum().backward()
    frozen = [p for n, p in inserted.backbone.named_parameters() if ".adapter." not in n]
    adapters = [p for n, p in inserted.backbone.named_parameters() if ".adapter." in n]
    assert all(p.grad is None for p in frozen) and all(p.requires_grad is False for p in frozen)
    # up-projections start at zero, so the first backward reaches every adapter weight through them.
    assert all(p.grad is not None for p in adapters)
    assert not inserted.backbone.training


def test_inserted_adapters_start_as_the_identity() -> None:
    """Zero-initialised up-projections: before training the adapted backbone equals the frozen one."""
    linear = build_model(tiny_cfg(tuning="linear"), num_classes=2)
    inserted = build_model(tiny_cfg(tuning="inserted"), num_classes=2)
    x = clip()
    torch.testing.assert_close(inserted.extract(x).pooled, linear.extract(x).pooled)


def test_trainable_parameter_counts_at_vit_b16_defaults() -> None:
    """Counted on the meta device: no weights are materialised or downloaded."""
    from madapter.config import ModelSection

    counts = {}
    with torch.device("meta"):
        for tuning in MODES:
            cfg = ModelSection(backbone="vit_base_patch16_224", img_size=224, tuning=tuning)
            counts[tuning] = count_parameters(build_model(cfg, num_classes=400))
    backbone = counts["full"]["backbone"]
    assert 85_000_000 < backbone < 87_000_000
    assert counts["madapter"]["trainable"] < 0.10 * backbone
    assert counts["linear"]["trainable"] == 768 * 400 + 400
    assert counts["full"]["trainable"] == backbone + 768 * 400 + 400
    assert counts["linear"]["trainable"] < counts["inserted"]["trainable"] < counts["full"]["trainable"]


@pytest.mark.parametrize("tuning", ["madapter", "inserted"])
def test_backbone_chunking_changes_memory_not_results(tuning: str) -> None:
    """Chunks hold whole clips, so even inserted adapters (which fold time back out) see whole clips."""
    whole = build_model(tiny_cfg(tuning=tuning, backbone_chunk=None), num_classes=3).eval()
    chunked = build_model(tiny_cfg(tuning=tuning, backbone_chunk=5), num_classes=3).eval()
    chunked.load_state_dict(whole.state_dict())
    calls: list[int] = []
    chunked.backbone.register_forward_pre_hook(lambda _m, args: calls.append(args[0].shape[0]))
    x = clip(batch=3, frames=4)
    with torch.no_grad():
        torch.testing.assert_close(chunked(x), whole(x), atol=1e-5, rtol=1e-5)
    assert calls == [4, 4, 4]  # chunk of 5 frames rounds down to one 4-frame clip per call
