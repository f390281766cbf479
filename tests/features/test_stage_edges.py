"""The features stage without Ray: disabled no-op, missing inputs, params, and the dvc.yaml contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from madapter.config import ConfigError, FeaturesSection, params_from_dict
from madapter.data.features import stage as features_stage
from madapter.data.features.feature_store import (
    FEATURES_META,
    FeaturesError,
    FeatureStore,
    read_features_meta,
)
from madapter.data.features.stage import extract_features
from madapter.paths import StagePaths
from tests.common.processes import REPO

from .conftest import feature_params


def test_train_source_frames_is_a_cheap_no_op_that_says_so(tmp_path: Path) -> None:
    params = feature_params(tmp_path, train={"source": "frames"})
    paths = StagePaths.from_params(params)
    (paths.features / "train").mkdir(parents=True)
    (paths.features / "train" / "level0-shard-00000.npy").write_bytes(b"stale")  # an earlier extraction
    root = extract_features(params)  # no frame store, no Ray: it must not need either
    assert root == paths.features
    assert sorted(p.name for p in root.rglob("*")) == [FEATURES_META]
    meta = json.loads((root / FEATURES_META).read_text())
    assert meta["enabled"] is False and meta["reason"] == "train.source: frames"
    with pytest.raises(FeaturesError, match="run the features stage") as err:
        read_features_meta(root)
    assert str(root / FEATURES_META) in str(err.value) and "train.source: features" in str(err.value)
    with pytest.raises(FeaturesError):
        FeatureStore(root, "train")
    assert json.loads((paths.timings / "features.json").read_text())["videos"] == 0


def test_missing_frame_store_is_one_line_naming_the_path_and_the_stage(tmp_path: Path) -> None:
    params = feature_params(tmp_path)
    with pytest.raises(ConfigError) as err:
        extract_features(params)
    line = str(err.value)
    assert "\n" not in line and str(StagePaths.from_params(params).frames.resolve()) in line
    assert "run the decode stage" in line
    assert not StagePaths.from_params(params).features.exists()


def test_missing_features_name_the_file_and_the_stage(tmp_path: Path) -> None:
    with pytest.raises(FeaturesError, match="features.json: not found; run the features stage"):
        FeatureStore(tmp_path, "train")


@pytest.mark.parametrize("tuning", ["full", "inserted"])
def test_features_need_a_frozen_backbone(tuning: str) -> None:
    with pytest.raises(ConfigError) as err:
        params_from_dict({"train": {"source": "features"}, "model": {"tuning": tuning}}, "params.yaml")
    assert str(err.value).startswith("params.yaml: train.source: features needs a frozen backbone")
    assert "model.tuning" in str(err.value) and "set train.source: frames" in str(err.value)
    for frozen in ("madapter", "linear"):
        params_from_dict({"train": {"source": "features"}, "model": {"tuning": frozen}})


def test_dvc_params_are_every_key_that_shapes_the_features_and_no_run_control() -> None:
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["features"]
    declared = set(stage["params"])
    run_control = features_stage.RUN_CONTROL_KEYS
    assert run_control <= set(FeaturesSection.model_fields)
    shaping = {f"features.{k}" for k in FeaturesSection.model_fields if k not in run_control}
    assert shaping <= declared, f"dvc.yaml features.params: add {sorted(shaping - declared)}"
    assert not {f"features.{k}" for k in run_control} & declared and "features" not in declared
    for key in ("train.source", "base.seed", "model.backbone", "model.weights_file", "model.levels",
                "model.img_size", "model.num_frames", "model.half_precision", "model.tuning", "evaluate.clips",
                "evaluate.crops", "decode.backend"):
        assert key in declared, key
    assert [{"${base.outputs_dir}/timings/features.json": {"cache": False}}] == \
        [m for m in stage["metrics"] if isinstance(m, dict)]
    train_deps = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["train"]["deps"]
    assert "${base.data_dir}/features/${dataset.name}" in train_deps
    assert "${base.data_dir}/frames/${dataset.name}" in train_deps


def test_training_views_without_augmentation_are_the_same_centred_clip(data_copy: Path) -> None:
    """``augment_train=False`` (the frame-sampling ablation's extraction): every stored training view
    is the validation clip; the stage's default draws a different clip per view."""
    import torch

    from madapter.data.features.extractor import BackboneExtractor
    from madapter.data.features.stage import plan_videos

    params = feature_params(data_copy, features={"train_views": 3})
    plan = plan_videos(params, StagePaths.from_params(params))
    data = params.model_dump(mode="json")
    fixed = BackboneExtractor(data, plan, 2, 1, augment_train=False).views("train", 0)
    drawn = BackboneExtractor(data, plan, 2, 1).views("train", 0)
    assert fixed.shape == drawn.shape and fixed.shape[0] == 3
    assert torch.equal(fixed[0], fixed[1]) and torch.equal(fixed[0], fixed[2])
    assert not (torch.equal(drawn[0], drawn[1]) and torch.equal(drawn[0], drawn[2]))
