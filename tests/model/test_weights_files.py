"""The weights files users actually have (issue 19, point 4).

* BatchNorm checkpoints without ``num_batches_tracked`` (TF ports, older torchvision files, mapped
  EfficientNet-Lite weights) load like ``load_state_dict`` loads them: that counter is kept from
  the model, every real parameter and running statistic must still be in the file.
* OpenAI's original CLIP ``.pt`` files are TorchScript archives, which ``torch.load(weights_only=True)``
  rejects: they are read with ``torch.jit.load`` and remapped by timm's filter like a state dict.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from madapter.models.backbone import Backbone, WeightsError, load_weights_file

BN_CNN = "resnet10t"  # small timm CNN with BatchNorm layers (14 of them)
VIT = "vit_tiny_patch16_224"

# Writing the archives needs torch.jit.trace/script/save, deprecated (FutureWarning) since torch 2.9.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")


def _perturbed(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state dict with every float tensor moved away from any init (variances stay > 0)."""
    g = torch.Generator().manual_seed(1)
    return {
        k: (torch.rand(v.shape, generator=g) + 0.5) if v.is_floating_point() else v.clone()
        for k, v in model.state_dict().items()
    }


def _without_counters(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}


def test_bn_checkpoint_without_num_batches_tracked_loads(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    source = timm.create_model(BN_CNN, pretrained=False, num_classes=0)
    full = _perturbed(source)
    state = _without_counters(full)
    n_counters = len(full) - len(state)
    assert n_counters == 14
    path = tmp_path / "tf_port.pth"
    torch.save(state, path)

    backbone = Backbone(BN_CNN, weights_file=path)
    loaded = backbone.model.state_dict()
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key
    for key in full.keys() - state.keys():  # kept from the freshly built model
        assert int(loaded[key]) == 0, key

    target = timm.create_model(BN_CNN, pretrained=False, num_classes=0)
    with caplog.at_level(logging.INFO, logger="madapter.models.backbone"):
        counts = load_weights_file(target, path)
    assert counts == {"matched": len(state), "missing": 0, "unexpected": 0, "kept": n_counters}
    assert f"matched={len(state)} missing=0 unexpected=0 kept={n_counters} num_batches_tracked from the model" in (
        caplog.text
    )


@pytest.mark.parametrize("dropped", ["layer1.0.conv1.weight", "conv1.1.running_var", "bn1.running_mean"])
def test_bn_checkpoint_missing_a_real_tensor_is_still_refused(tmp_path: Path, dropped: str) -> None:
    state = _without_counters(_perturbed(timm.create_model(BN_CNN, pretrained=False, num_classes=0)))
    assert dropped in state
    del state[dropped]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError) as err:
        Backbone(BN_CNN, weights_file=path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"model.weights_file: {path} does not fit the backbone: 1 of ")
    assert f"tensors are missing (e.g. {dropped})" in message


def test_torchscript_archive_with_the_models_own_keys_loads(tmp_path: Path) -> None:
    source = timm.create_model(BN_CNN, pretrained=False, num_classes=0).eval()
    state = _perturbed(source)
    source.load_state_dict(state)
    path = tmp_path / "traced.pt"
    torch.jit.save(torch.jit.trace(source, torch.randn(1, 3, 32, 32)), str(path))

    backbone = Backbone(BN_CNN, weights_file=path)
    for key, value in backbone.model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert backbone.weights_digest.startswith("sha256:")


def _module_holding(state: dict[str, torch.Tensor]) -> nn.Module:
    """A bare module tree whose ``state_dict`` is ``state`` (dotted keys become submodules)."""
    root = nn.Module()
    for key, value in state.items():
        *path, leaf = key.split(".")
        node = root
        for part in path:
            if not hasattr(node, part):
                node.add_module(part, nn.Module())
            node = getattr(node, part)
        if value.is_floating_point():
            node.register_parameter(leaf, nn.Parameter(value.clone(), requires_grad=False))
        else:
            node.register_buffer(leaf, value.clone())
    return root


def _as_openai_clip(vit_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A timm ViT state dict under OpenAI CLIP's naming (the inverse of timm's ``_convert_openai_clip``),
    plus the text-tower and metadata tensors an OpenAI archive also holds."""
    out: dict[str, torch.Tensor] = {}
    for key, value in vit_state.items():
        if key == "cls_token":
            out["visual.class_embedding"] = value.flatten()
            continue
        if key == "pos_embed":
            out["visual.positional_embedding"] = value[0]
            continue
        name = key.replace("patch_embed.proj", "conv1").replace("blocks.", "transformer.resblocks.")
        name = name.replace("attn.qkv.", "attn.in_proj_").replace("attn.proj", "attn.out_proj")
        name = name.replace("mlp.fc1", "mlp.c_fc").replace("mlp.fc2", "mlp.c_proj")
        name = name.replace("norm1", "ln_1").replace("norm2", "ln_2")
        name = "ln_post" + name[len("norm"):] if name.startswith("norm.") else name
        out[f"visual.{name}"] = value
    dim = vit_state["cls_token"].shape[-1]
    out["visual.proj"] = torch.randn(dim, 8)  # CLIP's image projection: ignored (maps to the head)
    out["token_embedding.weight"] = torch.randn(10, 8)  # text tower: dropped by the filter
    out["transformer.resblocks.0.ln_1.weight"] = torch.ones(8)
    out["logit_scale"] = torch.tensor(4.6)
    out["input_resolution"] = torch.tensor(32)
    return out


def test_openai_clip_style_torchscript_archive_is_remapped(tmp_path: Path) -> None:
    source = timm.create_model(VIT, pretrained=False, img_size=32, num_classes=0)
    vit_state = _perturbed(source)
    path = tmp_path / "ViT-T-16.pt"
    torch.jit.save(torch.jit.script(_module_holding(_as_openai_clip(vit_state))), str(path))
    with zipfile.ZipFile(path) as archive:  # what the loader has to recognise
        assert any(name.endswith("/constants.pkl") for name in archive.namelist())

    backbone = Backbone(VIT, img_size=32, weights_file=path)
    loaded = backbone.model.state_dict()
    assert loaded.keys() == vit_state.keys()
    for key, value in vit_state.items():
        assert torch.equal(loaded[key], value), key


def test_unreadable_torchscript_archive_is_one_line_with_the_conversion(tmp_path: Path) -> None:
    path = tmp_path / "broken.pt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("broken/data.pkl", b"not a pickle")
        archive.writestr("broken/constants.pkl", b"not a pickle either")
        archive.writestr("broken/code/__torch__/model.py", b"def forward(self) -> None:\n  ???\n")
        archive.writestr("broken/version", b"3\n")
    with pytest.raises(WeightsError) as err:
        Backbone(BN_CNN, weights_file=path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"model.weights_file: {path} ")
    assert "TorchScript" in message
    assert "torch.save(torch.jit.load(" in message and ".state_dict()" in message


def test_truncated_file_is_one_line(tmp_path: Path) -> None:
    good = tmp_path / "good.pth"
    torch.save(timm.create_model(BN_CNN, pretrained=False, num_classes=0).state_dict(), good)
    path = tmp_path / "truncated.pth"
    path.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(WeightsError) as err:
        Backbone(BN_CNN, weights_file=path)
    assert "\n" not in str(err.value)
    assert str(err.value).startswith(f"model.weights_file: {path} could not be read")
