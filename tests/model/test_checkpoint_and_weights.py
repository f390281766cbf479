"""Checkpoints hold only trainable weights and rebuild exactly; local weight files load or fail clearly."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from madapter.models.backbone import Backbone, WeightsError
from madapter.models.build import build_model
from madapter.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

from .conftest import CNN, clip, tiny_cfg


@pytest.mark.parametrize("tuning", ["madapter", "inserted", "linear"])
def test_checkpoint_round_trip_gives_identical_logits(tmp_path: Path, tuning: str) -> None:
    model = build_model(tiny_cfg(tuning=tuning), num_classes=3)
    with torch.no_grad():  # move the trainable weights away from their init
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn_like(p))
    model.eval()
    x = clip(frames=4)
    path = save_checkpoint(tmp_path / "ckpt.pt", model, ["a", "b", "c"], extra={"epoch": 3})

    restored, ckpt = load_checkpoint(path)
    restored.eval()
    with torch.no_grad():
        assert torch.equal(model(x), restored(x))
    assert ckpt["classes"] == ["a", "b", "c"] and ckpt["extra"] == {"epoch": 3}
    # Only trainable tensors are stored: nothing of the frozen backbone's own weights.
    stored = ckpt["trainable_state_dict"]
    assert not any(k.startswith("backbone.") and ".adapter." not in k for k in stored)
    assert sum(v.numel() for v in stored.values()) == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_checkpoint_refuses_a_model_on_another_backbone(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "ckpt.pt", build_model(tiny_cfg(), num_classes=2), ["a", "b"])
    other = build_model(tiny_cfg(CNN), num_classes=2)
    with pytest.raises(CheckpointError, match="backbone name 'vit_tiny_patch16_224' but the model has 'resnet18'"):
        load_checkpoint(path, model=other)
    other_seed = build_model(tiny_cfg(init_seed=1), num_classes=2)
    with pytest.raises(CheckpointError, match="weights_digest"):
        load_checkpoint(path, model=other_seed)


def test_not_a_checkpoint_is_one_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt: not a readable checkpoint"):
        load_checkpoint(junk)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_file_loads_to_equal_tensors(tmp_path: Path, suffix: str) -> None:
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=10)
    torch.nn.init.normal_(source.pos_embed, std=0.5)  # make the file clearly differ from any init
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    path = tmp_path / f"weights{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save({"state_dict": state}, path)

    backbone = Backbone("vit_tiny_patch16_224", img_size=32, weights_file=path)
    for key, value in backbone.model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert backbone.weights_digest.startswith("sha256:")


def test_mismatching_weights_file_fails_naming_the_problem(tmp_path: Path) -> None:
    wrong = timm.create_model("vit_small_patch16_224", pretrained=False, img_size=32, num_classes=0)
    path = tmp_path / "small.safetensors"
    save_file(wrong.state_dict(), str(path))
    with pytest.raises(WeightsError, match=r"small.safetensors does not fit the backbone: .* other shapes"):
        Backbone("vit_tiny_patch16_224", img_size=32, weights_file=path)

    partial = tmp_path / "partial.pth"
    state = timm.create_model("vit_tiny_patch16_224", img_size=32, num_classes=0).state_dict()
    torch.save({k: v for k, v in state.items() if not k.startswith("blocks.11.")}, partial)
    with pytest.raises(WeightsError, match=r"partial.pth does not fit the backbone: \d+ of \d+ tensors are missing"):
        Backbone("vit_tiny_patch16_224", img_size=32, weights_file=partial)

    with pytest.raises(WeightsError, match="does not exist"):
        Backbone("vit_tiny_patch16_224", img_size=32, weights_file=tmp_path / "nope.safetensors")
