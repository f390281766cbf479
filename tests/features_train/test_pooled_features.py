"""Pooled cached features train the model that is served: with ``model.level_pool`` the model pools
its own level grids, the features stage stores what it gives, and a head trained on those features
rebuilds (from its checkpoint) into a full model that gives the same logits on the frames."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from madapter.config import ConfigError, ModelSection
from madapter.data.features.dataset import FeatureDataset, check_features_match, collate_features
from madapter.data.features.feature_store import FeatureStore, read_features_meta
from madapter.models.build import build_model
from madapter.models.checkpoint import describe_backbone, load_checkpoint, save_checkpoint
from madapter.models.headless import build_feature_classifier
from madapter.train.step import collate_clips
from tests.features_train.conftest import (
    CLASSES,
    params_for,
    tiny_cfg,
    train_clips,
    write_features,
    write_frame_store,
)

FP16 = {"atol": 2e-2, "rtol": 2e-2}


def _pooling_cfg(level_pool: int) -> ModelSection:
    """The tiny ViT at 64 px (a 4x4 token grid per level), pooled inside the model."""
    return ModelSection.model_validate({**tiny_cfg().model_dump(), "img_size": 64, "level_pool": level_pool})


def _model_and_head(cfg: ModelSection):
    torch.manual_seed(0)
    model = build_model(cfg, num_classes=len(CLASSES)).eval()
    torch.manual_seed(0)
    head = build_feature_classifier(cfg, model.backbone.levels, model.backbone.num_features, len(CLASSES),
                                    describe_backbone(model))
    return model, head.eval()


@pytest.mark.parametrize("level_pool", [2, 3])
def test_head_on_pooled_features_gives_the_full_models_logits_within_fp16(level_pool: int, tmp_path: Path) -> None:
    """Same weights, same view: the full (pooling) model on frames vs the head on its stored fp16 features."""
    model, head = _model_and_head(_pooling_cfg(level_pool))
    clips = train_clips(model, write_frame_store(tmp_path / "frames"))
    write_features(tmp_path / "features", model, clips, views=2, dtype="float16")
    store = FeatureStore(tmp_path / "features", "train")
    assert [spec.grid for spec in store.levels] == [(level_pool, level_pool)] * 4  # 4x4 tokens, pooled
    dataset = FeatureDataset(store, train=True, with_levels=True)
    head.load_trainable_state_dict(model.trainable_state_dict())
    for epoch in (0, 1):
        clips.set_epoch(epoch)
        dataset.set_epoch(epoch)
        (levels, pooled), y = collate_features([dataset[i] for i in range(len(dataset))])
        assert levels[0].shape[2:4] == (level_pool, level_pool)
        x, y_frames = collate_clips([clips[i] for i in range(len(clips))])
        assert torch.equal(y, y_frames)
        with torch.no_grad():
            torch.testing.assert_close(head(levels, pooled), model(x), **FP16)


def test_a_head_trained_on_pooled_features_rebuilds_into_a_model_that_pools_the_same(tmp_path: Path) -> None:
    """predict and serving rebuild the full model from the head's checkpoint: it must pool as the
    features were pooled, or the branch would be served 4x4 grids after training on 2x2 ones."""
    model, _ = _model_and_head(_pooling_cfg(2))
    clips = train_clips(model, write_frame_store(tmp_path / "frames"))
    write_features(tmp_path / "features", model, clips, views=1, dtype="float16")
    store = FeatureStore(tmp_path / "features", "train")
    head = build_feature_classifier(model.config, model.backbone.levels, store.pooled_dim, len(CLASSES),
                                    store.meta["backbone"])
    with torch.no_grad():
        for p in head.parameters():  # "trained": anything but the init
            p.add_(0.05 * torch.randn_like(p))
    path = save_checkpoint(tmp_path / "ckpt.pt", head.eval(), CLASSES, extra={"source": "features"})
    served, ckpt = load_checkpoint(path)
    assert served.level_pool == 2 and ckpt["backbone"]["level_pool"] == 2 and ckpt["model_cfg"]["level_pool"] == 2
    (levels, pooled), _ = collate_features([FeatureDataset(store, train=True)[i] for i in range(len(store))])
    x, _ = collate_clips([clips[i] for i in range(len(clips))])
    with torch.no_grad():
        torch.testing.assert_close(served.eval()(x), head(levels, pooled), **FP16)


def test_pooled_features_are_checked_against_model_level_pool(tmp_path: Path) -> None:
    model, _ = _model_and_head(_pooling_cfg(2))
    clips = train_clips(model, write_frame_store(tmp_path / "frames"))
    write_features(tmp_path / "features", model, clips, views=1)
    meta = read_features_meta(tmp_path / "features")
    assert meta["backbone"]["level_pool"] == 2 and meta["cache_key"]["level_pool"] == 2
    same = {"features": {"train_views": 1}}
    check_features_match(params_for(model.config, **same), meta, tmp_path / "features")
    for other in (None, 3):
        cfg = model.config.model_copy(update={"level_pool": other})
        with pytest.raises(ConfigError) as err:
            check_features_match(params_for(cfg, **same), meta, tmp_path / "features")
        assert "\n" not in str(err.value)
        assert f"model.level_pool is {other!r} but the features were computed with 2" in str(err.value)


def test_every_model_key_the_features_depend_on_reruns_the_features_stage() -> None:
    """``check_features_match`` refuses a cache when a MATCH_KEYS key changed: DVC must rerun the stage on it too."""
    import yaml

    from madapter.data.features.dataset import MATCH_KEYS
    from tests.common.processes import REPO

    declared = set(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["features"]["params"])
    assert {f"model.{key}" for key in MATCH_KEYS} <= declared
    assert "model.level_pool" in declared and "features.pool" not in declared
