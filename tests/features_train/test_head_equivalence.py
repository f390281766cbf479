"""Training on cached features is training on frames, minus the backbone: same weights, same view,
same logits (within the stored fp16), same checkpoint, same steps."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from madapter.config import ConfigError, params_from_dict
from madapter.data.features.dataset import (
    FeatureDataset,
    central_view,
    check_features_match,
    collate_features,
    level_infos,
)
from madapter.data.features.feature_store import FeatureStore, read_features_meta
from madapter.models.build import build_head, build_model, count_parameters
from madapter.models.checkpoint import CheckpointError, describe_backbone, load_checkpoint, save_checkpoint
from madapter.models.headless import FeatureClassifier, build_feature_classifier
from madapter.train.optim import Optimisation
from madapter.train.step import collate_clips, train_epoch
from tests.features_train.conftest import (
    CLASSES,
    params_for,
    tiny_cfg,
    train_clips,
    write_features,
    write_frame_store,
)

CPU = torch.device("cpu")
FP16 = {"atol": 2e-2, "rtol": 2e-2}


def _model_and_head(tuning: str) -> tuple:
    torch.manual_seed(0)
    model = build_model(tiny_cfg(tuning), num_classes=len(CLASSES)).eval()
    torch.manual_seed(0)
    head = build_feature_classifier(model.config, model.backbone.levels, model.backbone.num_features, len(CLASSES),
                                    describe_backbone(model))
    return model, head.eval()


@pytest.mark.parametrize("tuning", ["madapter", "linear"])
def test_head_is_the_models_trainable_part_same_init_same_keys(tuning: str) -> None:
    model, head = _model_and_head(tuning)
    assert set(head.state_dict()) == set(model.trainable_state_dict())
    for key, value in model.trainable_state_dict().items():  # same seed -> same init: the backbone draws no RNG
        torch.testing.assert_close(head.state_dict()[key], value, msg=key)
    assert head.no_weight_decay() == {n for n in model.no_weight_decay() if n.startswith("adapter.")}
    counts = count_parameters(head)
    assert counts["backbone"] == 0 and counts["trainable"] == counts["total"] == count_parameters(model)["trainable"]


@pytest.mark.parametrize("tuning", ["madapter", "linear"])
def test_same_weights_same_view_same_logits_within_fp16(tuning: str, tmp_path: Path) -> None:
    """The acceptance test: a clip through the full model vs its cached (fp16) features through the head."""
    model, head = _model_and_head(tuning)
    clips = train_clips(model, write_frame_store(tmp_path / "frames"))
    write_features(tmp_path / "features", model, clips, views=2, dtype="float16")
    store = FeatureStore(tmp_path / "features", "train")
    dataset = FeatureDataset(store, train=True, with_levels=head.uses_levels)
    head.load_trainable_state_dict(model.trainable_state_dict())
    for epoch in (0, 1, 3):  # epoch 3 cycles back to view 1: the frames path's epoch-1 clip
        clips.set_epoch(epoch % 2)
        dataset.set_epoch(epoch)
        assert dataset.current_view == epoch % 2
        (levels, pooled), y = collate_features([dataset[i] for i in range(len(dataset))])
        x, y_frames = collate_clips([clips[i] for i in range(len(clips))])
        assert torch.equal(y, y_frames)
        with torch.no_grad():
            torch.testing.assert_close(head(levels, pooled), model(x), **FP16)


def test_a_training_epoch_on_features_updates_like_one_on_frames(tmp_path: Path) -> None:
    """Same init, same clips (fp32 features), same batches -> the same trained weights."""
    model, head = _model_and_head("madapter")
    model.train()
    head.train()
    clips = train_clips(model, write_frame_store(tmp_path / "frames"))
    write_features(tmp_path / "features", model, clips, views=1, dtype="float32")
    dataset = FeatureDataset(FeatureStore(tmp_path / "features", "train"), train=True)
    order = [[0, 3, 5], [1, 2, 4]]
    train_cfg = params_from_dict({"train": {"epochs": 1, "lr": 0.01, "warmup_epochs": 0}}).train
    for net, data, collate, forward in ((model, clips, collate_clips, lambda x: model.adapter(*_extract(model, x))),
                                        (head, dataset, collate_features, head)):
        opt = Optimisation.build(net, train_cfg, len(order), CPU)
        batches = [collate([data[i] for i in idx]) for idx in order]
        train_epoch(forward, net, batches, opt, 1, "none", CPU, lambda _step: None)
    for key, value in model.trainable_state_dict().items():
        torch.testing.assert_close(head.state_dict()[key], value, atol=1e-5, rtol=1e-4, msg=key)


def _extract(model, x):
    features = model.extract(x)
    return features.levels, features.pooled


@pytest.mark.parametrize("tuning", ["madapter", "linear"])
def test_a_head_checkpoint_loads_as_the_full_model(tuning: str, tmp_path: Path) -> None:
    model, head = _model_and_head(tuning)
    with torch.no_grad():
        for p in head.parameters():  # "trained": anything but the init
            p.add_(0.01 * torch.randn_like(p))
    path = save_checkpoint(tmp_path / "ckpt.pt", head, CLASSES, extra={"source": "features"})
    full, ckpt = load_checkpoint(path)
    assert ckpt["extra"]["source"] == "features" and ckpt["backbone"] == describe_backbone(model)
    x = torch.randn(2, 4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features = full.eval().extract(x)
        torch.testing.assert_close(full(x), head(features.levels, features.pooled))
    load_checkpoint(path, model=model)  # the model the features came from fits it


def test_a_head_for_other_features_is_refused(tmp_path: Path) -> None:
    from madapter.models.checkpoint import load_head_checkpoint

    model, head = _model_and_head("madapter")
    path = save_checkpoint(tmp_path / "ckpt.pt", head, CLASSES)
    other = {**describe_backbone(model), "weights_digest": "random-init:seed=7"}
    with pytest.raises(CheckpointError, match="backbone weights_digest 'random-init:seed=0' but the features have"):
        load_head_checkpoint(path, model.backbone.levels, model.backbone.num_features, other)
    loaded, _ = load_head_checkpoint(path, model.backbone.levels, model.backbone.num_features, describe_backbone(model))
    assert isinstance(loaded, FeatureClassifier)


def test_build_head_refuses_nothing_but_the_feature_classifier_refuses_a_trained_backbone() -> None:
    cfg = tiny_cfg("full")
    assert isinstance(build_head(cfg, [], 192, 3), torch.nn.Module)  # build_model's linear head for full
    with pytest.raises(ValueError, match="model.tuning: full trains the backbone"):
        build_feature_classifier(cfg, [], 192, 3, {})


def test_feature_dataset_views_and_collate(tmp_path: Path) -> None:
    model, _ = _model_and_head("madapter")
    clips = train_clips(model, write_frame_store(tmp_path / "frames"))
    write_features(tmp_path / "features", model, clips, views=3)
    store = FeatureStore(tmp_path / "features", "train")
    assert [(i.index, i.channels) for i in level_infos(store)] == [(i.index, i.channels) for i in model.backbone.levels]
    fixed = FeatureDataset(store, train=False, view=2)
    fixed.set_epoch(5)
    levels, pooled, label = fixed[1]
    assert fixed.current_view == 2 and pooled.dtype == torch.float32 and pooled.shape == (4, 192)
    assert torch.equal(pooled, torch.from_numpy(store.view(1, 2)[1].astype("float32"))) and label == store.labels[1]
    (grids, pooled_all), y = collate_features([FeatureDataset(store, False, view=None)[i] for i in (0, 1)])
    assert pooled_all.shape == (2, 3, 4, 192) and grids[0].shape == (2, 3, 4, 2, 2, 192) and y.tolist() == [0, 0]
    bare = FeatureDataset(store, train=True, with_levels=False)[0]
    assert bare[0] == []
    with pytest.raises(ValueError, match="view 3 out of range"):
        FeatureDataset(store, train=False, view=3)
    assert [central_view(c, k) for c, k in ((1, 1), (3, 1), (1, 3), (3, 3), (2, 2))] == [0, 1, 1, 4, 3]


@pytest.mark.parametrize("key, value", [("model.backbone", "resnet18"), ("model.img_size", 64),
                                        ("model.levels", [1, 2]), ("model.num_frames", 8),
                                        ("model.half_precision", True),
                                        ("model.init_seed", 3), ("base.seed", 1), ("model.level_pool", 1),
                                        ("features.train_views", 2), ("evaluate.clips", 3)])
def test_params_the_features_were_not_computed_with_are_one_config_error(tmp_path: Path, key: str, value) -> None:
    model, _ = _model_and_head("madapter")
    clips = train_clips(model, write_frame_store(tmp_path / "frames"))
    write_features(tmp_path / "features", model, clips, views=1)
    meta = read_features_meta(tmp_path / "features")
    same = {"features": {"train_views": 1}}
    check_features_match(params_for(model.config, **same), meta, tmp_path / "features")
    head_only = model.config.model_copy(update={"width": 8, "fusion": "gated", "dropout": 0.5})
    check_features_match(params_for(head_only, **same), meta, tmp_path / "features")  # the head's keys are free
    section, name = key.split(".")
    cfg = model.config.model_copy(update={name: value}) if section == "model" else model.config
    other = {**same, section: {**same.get(section, {}), name: value}} if section != "model" else same
    with pytest.raises(ConfigError) as err:
        check_features_match(params_for(cfg, **other), meta, tmp_path / "features")
    line = str(err.value)
    assert "\n" not in line and "features.json" in line and "re-run the features stage" in line
    assert (f"{key} is {value!r}" if section == "model" else f"now {value!r}" if key == "base.seed" else key) in line


def test_the_order_blind_baseline_reads_the_madapter_features_and_not_the_reverse(tmp_path: Path) -> None:
    """``linear`` needs only the pooled output every cache holds (the demo trains it on the
    ``madapter`` features); a ``madapter`` head on a ``linear`` cache (no levels) is refused."""
    model, _ = _model_and_head("madapter")
    clips = train_clips(model, write_frame_store(tmp_path / "frames"))
    write_features(tmp_path / "features", model, clips, views=1)
    meta = read_features_meta(tmp_path / "features")
    same = {"features": {"train_views": 1}}
    linear = model.config.model_copy(update={"tuning": "linear", "levels": [1, 2], "level_pool": 1})
    check_features_match(params_for(linear, **same), meta, tmp_path / "features")

    linear_model, _ = _model_and_head("linear")
    write_features(tmp_path / "linear-features", linear_model, clips, views=1)
    linear_meta = read_features_meta(tmp_path / "linear-features")
    with pytest.raises(ConfigError, match="model.tuning is 'madapter' but the features were computed with 'linear'"):
        check_features_match(params_for(model.config, **same), linear_meta, tmp_path / "linear-features")
