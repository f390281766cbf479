"""A real Ray Train run on cached features: the real data stages and the real ``features`` stage
(Ray Data) on the synthetic set, one CPU worker, 2 epochs, logging to a real ``mlflow server``;
then ``evaluate`` from the features and from the source videos for the same checkpoint.

The run stores pooled grids (``model.level_pool: 1``): one Ray Train run then shows both that the
head trains on what the features stage stored and that the checkpoint rebuilds a model that pools
the same way, which is the part a full-grid run cannot get wrong.  Full grids are what the
``trained`` model (tests/train/) and the finished pipeline train on; that the head on full-grid
features gives the full model's logits is tests/features_train/test_head_equivalence.py."""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from madapter.config import ConfigError
from madapter.data.features.dataset import features_digest, level_infos
from madapter.data.features.feature_store import FeatureStore, read_features_meta
from madapter.data.index.schema import eval_split
from madapter.evaluate import evaluate, score_features, score_frames
from madapter.models.build import count_parameters
from madapter.models.checkpoint import load_checkpoint
from madapter.models.classifier import VideoClassifier
from madapter.models.headless import build_feature_classifier
from madapter.paths import StagePaths
from madapter.train.driver import train
from madapter.train.identity import ray_run_name
from tests.common.synthetic_data import make_params

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

POOL = 1
"""``model.level_pool`` of the run: every level's token grid pooled to 1x1."""


@pytest.fixture(scope="module")
def ray_env():
    """A local Ray of 2 CPUs, or the one already running in this pytest process (another folder's)."""
    import ray

    from madapter.ray_runtime import worker_runtime_env

    if ray.is_initialized():
        yield
        return
    ray.init(address="local", num_cpus=2, object_store_memory=200 * 2**20, include_dashboard=False, runtime_env=worker_runtime_env())
    yield
    ray.shutdown()


def _params(data: Path, outputs: Path, uri: str | None, **sections):
    sections = {"evaluate": {"clips": 2, "loader_workers": 0}, "features": {"train_views": 2, "batch_size": 8, "object_store_mb": 100},
                **sections}
    train_cfg = {"epochs": 2, "num_workers": 1, "source": "features", **sections.pop("train", {})}
    model = {"level_pool": POOL, **sections.pop("model", {})}  # every run here is on the module's pooled features
    return make_params(data, outputs, uri, train=train_cfg, model=model, **sections)


@pytest.fixture(scope="module")
def features_run(data_dir: Path, mlflow_server: str, ray_env, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    """The features stage at ``model.level_pool: 1``, then a 1-worker 2-epoch Ray Train run on its output;
    on a copy of the session's frames (the features are this module's alone)."""
    from madapter.data.features.stage import extract_features

    root = tmp_path_factory.mktemp("features-run")
    shutil.copytree(data_dir, root / "data", ignore=shutil.ignore_patterns("features"))
    params = _params(root / "data", root / "on-features", mlflow_server)
    started = time.perf_counter()
    extract_features(params)
    extracted = time.perf_counter()
    result = train(params)
    log.info("features stage %.1fs, train %.1fs", extracted - started, time.perf_counter() - extracted)
    return params, result


def test_the_worker_trains_the_head_alone_and_the_checkpoint_is_the_full_model(
    features_run, mlflow_server: str  # noqa: F811
) -> None:
    params, result = features_run
    assert result.completed and [h["epoch"] for h in result.history] == [1, 2]
    root = StagePaths.from_params(params).features
    meta = read_features_meta(root)
    assert [lvl["grid"] for lvl in meta["levels"]] == [[POOL, POOL]] * 4 and meta["level_pool"] == POOL
    store = FeatureStore(root, "train")
    head = build_feature_classifier(params.model, level_infos(store), store.pooled_dim, len(store.classes),
                                    store.meta["backbone"])
    # What the worker built, as it recorded it: the head's class and exactly the head's parameters.
    status = json.loads((Path(params.train.storage_path) / ray_run_name(params) / "workers" / "rank-0.json").read_text())
    assert status["source"] == "features" and status["model"] == "FeatureClassifier"
    assert status["model_parameters"] == count_parameters(head)["total"]
    tags = MlflowClient(mlflow_server).get_run(result.run_id).data.tags
    assert tags["params_backbone"] == "0" and tags["train.model_class"] == "FeatureClassifier"
    assert tags["train_source"] == "features"
    # The deployable checkpoint rebuilds backbone + head.
    model, ckpt = load_checkpoint(result.checkpoint)
    assert isinstance(model, VideoClassifier) and count_parameters(model)["backbone"] > 10 * status["model_parameters"]
    assert ckpt["extra"]["source"] == "features" and ckpt["extra"]["features_digest"] == features_digest(root)
    assert ckpt["backbone"] == store.meta["backbone"] == meta["backbone"]
    assert model.level_pool == POOL  # it pools the frames as the features were pooled


def _scored(score, params, checkpoint: Path):
    """``score`` (``score_features`` / ``score_frames``) as ``evaluate`` calls it: the stage's paths, its split."""
    paths = StagePaths.from_params(params)
    return score(params, paths, checkpoint, eval_split(paths.index, params.evaluate.split))


def test_evaluate_from_features_matches_evaluate_from_the_source_videos(features_run) -> None:
    """Evaluating from the source videos (predict's and serving's path: the backbone, then the
    checkpoint's pooling) scores as evaluating from the stored features does."""
    params, result = features_run
    frames_params = params.model_copy(update={"train": params.train.model_copy(update={"source": "frames"})})
    on_features = _scored(score_features, params, result.checkpoint)
    on_frames = _scored(score_frames, frames_params, result.checkpoint)
    assert on_features.split == on_frames.split == "test" and on_features.logits.shape[1] == 2  # 2 clips x 1 crop
    np.testing.assert_array_equal(on_features.labels, on_frames.labels)
    np.testing.assert_allclose(on_features.logits, on_frames.logits, atol=2e-2, rtol=2e-2)

    by_features, by_frames = evaluate(params), evaluate(frames_params)
    assert (by_features["source"], by_frames["source"]) == ("features", "frames")
    assert by_features["protocol"] == by_frames["protocol"] == "4x2x1"
    assert by_features["num_videos"] == by_frames["num_videos"]
    for key in ("top1", "top5", "mean_class_acc"):
        assert by_features[key] == pytest.approx(by_frames[key], abs=1.0 / by_frames["num_videos"] + 1e-9), key


def test_features_of_another_model_or_none_at_all_are_one_line_before_any_worker(
    features_run, tmp_path: Path
) -> None:
    params, _ = features_run
    data = Path(params.base.data_dir)
    with pytest.raises(ConfigError) as err:
        train(_params(data, tmp_path / "other-levels", None, model={"levels": [3, 11]}))
    assert "\n" not in str(err.value) and "model.levels is [3, 11]" in str(err.value)
    assert "re-run the features stage" in str(err.value)
    with pytest.raises(ConfigError) as err:
        train(_params(data, tmp_path / "other-views", None, features={"train_views": 3}))
    assert "features.train_views" in str(err.value) and "re-run the features stage" in str(err.value)
    with pytest.raises(ConfigError) as err:
        train(_params(tmp_path / "no-data", tmp_path / "none", None))
    assert "\n" not in str(err.value) and "features.json" in str(err.value) and "features stage" in str(err.value)
