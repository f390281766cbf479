"""``model.level_pool``: the model pools each level's token grid itself, so every path (frames, cached
features, evaluate, predict, serving) feeds the branch the same grids, and a checkpoint rebuilds a
model that pools the same way.  Also: an old params file's ``features.pool`` is one line saying
where the key went, and the one key check behind both ``load_trainable_state_dict``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from madapter.config import ConfigError, ModelSection, load_params, params_from_dict
from madapter.models.build import build_model
from madapter.models.checkpoint import CheckpointError, describe_backbone, load_checkpoint, save_checkpoint
from madapter.models.headless import build_feature_classifier
from madapter.overrides import resolve_params

from .conftest import CNN, clip, tiny_cfg


def vit_64(**overrides) -> ModelSection:
    """A ViT-tiny at 64 px: a 4x4 token grid per level, so pooling to 2x2 really pools."""
    return ModelSection.model_validate({**tiny_cfg().model_dump(), "img_size": 64, **overrides})


def _mean_pool(level: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Reference: adaptive average pooling of a channels-last ``[B, T, h, w, C]`` grid."""
    b, t = level.shape[:2]
    grid = F.adaptive_avg_pool2d(level.flatten(0, 1).permute(0, 3, 1, 2), size)
    return grid.permute(0, 2, 3, 1).unflatten(0, (b, t))


def test_extract_pools_every_level_to_2x2_and_the_branch_trains_on_it() -> None:
    pooled_model = build_model(vit_64(level_pool=2), num_classes=3)
    full_model = build_model(vit_64(), num_classes=3)  # same init seed: the same backbone
    x = clip(batch=2, frames=4, size=64)
    pooled, full = pooled_model.eval().extract(x), full_model.eval().extract(x)
    assert [tuple(lvl.shape) for lvl in full.levels] == [(2, 4, 4, 4, 192)] * 4
    assert [tuple(lvl.shape) for lvl in pooled.levels] == [(2, 4, 2, 2, 192)] * 4
    for small, big in zip(pooled.levels, full.levels, strict=True):
        torch.testing.assert_close(small, _mean_pool(big, (2, 2)))
        assert small.dtype == torch.float32
    torch.testing.assert_close(pooled.pooled, full.pooled)  # the final pooled feature is not touched

    pooled_model.train()
    logits = pooled_model(x)
    assert logits.shape == (2, 3)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 2])).backward()
    grads = [p.grad for p in pooled_model.adapter.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in pooled_model.backbone.parameters())


def test_level_pool_is_an_upper_bound_per_axis_never_an_upsample() -> None:
    """CNN levels have a grid per level: only those larger than the bound are pooled."""
    model = build_model(tiny_cfg(CNN, level_pool=3), num_classes=2).eval()
    full = build_model(tiny_cfg(CNN), num_classes=2).eval()
    x = clip(batch=1, frames=2, size=64)
    full_levels, pooled = full.extract(x).levels, model.extract(x).levels
    assert [tuple(lvl.shape[2:4]) for lvl in full_levels] == [(32, 32), (8, 8), (4, 4), (2, 2)]
    assert [tuple(lvl.shape[2:4]) for lvl in pooled] == [(3, 3), (3, 3), (3, 3), (2, 2)]
    for small, big in zip(pooled[:3], full_levels[:3], strict=True):
        torch.testing.assert_close(small, _mean_pool(big, (3, 3)))
    torch.testing.assert_close(pooled[-1], full_levels[-1])  # already within the bound: as it was
    assert model(x).shape == (1, 2)


@pytest.mark.parametrize("tuning", ["linear", "full", "inserted"])
def test_modes_that_read_no_levels_ignore_it_and_do_not_record_it(tuning: str) -> None:
    """Only the madapter branch reads levels; the others give the same logits with or without it, and
    their identity (checkpoints, features.json) says ``level_pool: None`` so either params load them."""
    torch.manual_seed(0)  # the head's init draws from the global RNG: the same for both
    with_pool = build_model(tiny_cfg(tuning=tuning, level_pool=1), num_classes=2).eval()
    torch.manual_seed(0)
    without = build_model(tiny_cfg(tuning=tuning), num_classes=2).eval()
    x = clip(batch=1, frames=8)
    with torch.no_grad():
        torch.testing.assert_close(with_pool(x), without(x))
    assert with_pool.level_pool is None and describe_backbone(with_pool) == describe_backbone(without)


def test_the_checkpoint_rebuilds_a_pooling_model_and_refuses_one_that_pools_otherwise(tmp_path: Path) -> None:
    model = build_model(vit_64(level_pool=2), num_classes=2).eval()
    with torch.no_grad():
        for p in model.adapter.parameters():
            p.add_(0.05 * torch.randn_like(p))
    path = save_checkpoint(tmp_path / "ckpt.pt", model, ["a", "b"])
    restored, ckpt = load_checkpoint(path)
    assert restored.level_pool == 2 and ckpt["backbone"]["level_pool"] == 2
    x = clip(batch=2, frames=4, size=64)
    with torch.no_grad():
        assert torch.equal(restored.eval()(x), model(x))
    unpooled = build_model(vit_64(), num_classes=2)
    with pytest.raises(CheckpointError, match="backbone level_pool 2 but the model has None"):
        load_checkpoint(path, model=unpooled)


def test_a_checkpoint_from_before_level_pool_loads_as_unpooled(tmp_path: Path) -> None:
    """Checkpoints and features.json written before the field existed have no ``level_pool``: ``None``."""
    model = build_model(tiny_cfg(), num_classes=2)
    path = save_checkpoint(tmp_path / "ckpt.pt", model, ["a", "b"])
    ckpt = torch.load(path, weights_only=True)
    del ckpt["backbone"]["level_pool"], ckpt["model_cfg"]["level_pool"]
    torch.save(ckpt, path)
    restored, _ = load_checkpoint(path, model=build_model(tiny_cfg(), num_classes=2))
    assert restored.level_pool is None


def test_features_pool_in_an_old_params_file_says_it_moved_to_model_level_pool(tmp_path: Path) -> None:
    want = "features.pool moved to model.level_pool"
    with pytest.raises(ConfigError) as err:
        params_from_dict({"features": {"pool": 4}}, "params.yaml")
    assert str(err.value).startswith(f"params.yaml: {want} (") and "\n" not in str(err.value)
    assert "rename the key" in str(err.value)

    old = tmp_path / "params.yaml"
    old.write_text(yaml.safe_dump({"features": {"train_views": 2, "pool": None}, "model": {"width": 32}}))
    with pytest.raises(ConfigError, match=want):
        load_params(old)
    new = tmp_path / "new.yaml"
    new.write_text(yaml.safe_dump({"features": {"train_views": 2}, "model": {"level_pool": 4}}))
    assert load_params(new).model.level_pool == 4
    with pytest.raises(ConfigError, match=want):  # the same line for a -S override (CLI, dvc exp run)
        resolve_params(new, None, ["features.pool=4"])
    with pytest.raises(ConfigError, match="unknown key 'features.poool'"):  # other unknown keys: as before
        params_from_dict({"features": {"poool": 4}})
    with pytest.raises(ConfigError, match="model.level_pool"):
        params_from_dict({"model": {"level_pool": 0}})


def test_both_trainable_loaders_refuse_missing_and_unknown_keys_the_same_way() -> None:
    """One key check (``load_exact_state``) behind the full model's and the head's loader."""
    model = build_model(tiny_cfg(), num_classes=2)
    head = build_feature_classifier(model.config, model.backbone.levels, model.backbone.num_features, 2,
                                    describe_backbone(model))
    state = model.trainable_state_dict()
    for target, what in ((model, "model"), (head, "head")):
        target.load_trainable_state_dict(state)
        missing = {k: v for k, v in state.items() if k != "adapter.head.bias"}
        with pytest.raises(ValueError, match=rf"do not fit this {what}: 1 missing \(e.g. \['adapter.head.bias'\]\)"):
            target.load_trainable_state_dict(missing)
        with pytest.raises(ValueError, match=r"0 missing .* 1 unknown \(e.g. \['adapter.extra'\]\)"):
            target.load_trainable_state_dict({**state, "adapter.extra": torch.zeros(1)})
