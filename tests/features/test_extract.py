"""The features stage for real: Ray Data actors, the real backbone, the real frame store and videos.

What it must guarantee: each stored view IS the frozen backbone's output for the view the frames
path would use (training epoch ``v``'s clip and crop; evaluate's protocol views of the source
video), in the stored dtype; the same inputs give the same bytes whatever the run-control keys.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from madapter.config import Params
from madapter.data.clips import ClipDataset, ViewProtocol, load_video_views
from madapter.data.features.feature_store import FORMAT, FeatureStore, read_features_meta
from madapter.data.features.stage import extract_features
from madapter.data.store.frame_store import FrameStore, store_digest
from madapter.models.build import build_model
from madapter.models.checkpoint import describe_backbone
from madapter.paths import StagePaths

from .conftest import feature_params

pytestmark = pytest.mark.integration

FP16 = {"rtol": 1e-3, "atol": 1e-3}
"""Stored float16 vs the fp32 backbone output: only the final rounding differs (2^-11 relative)."""


def _model(params: Params, classes: int = 2) -> torch.nn.Module:
    return build_model(params.model, classes).eval()


def _assert_features(got: tuple[list[np.ndarray], np.ndarray, int], want, label: int) -> None:
    levels, pooled, y = got
    assert y == label
    assert len(levels) == len(want.levels) == 4
    for stored, ref in zip([*levels, pooled], [*want.levels, want.pooled], strict=True):
        assert stored.dtype == np.float16 and stored.shape == tuple(ref.shape[1:])
        np.testing.assert_allclose(stored.astype(np.float32), ref[0].numpy(), **FP16)


def test_train_views_are_the_backbone_outputs_of_the_training_clips_of_epochs_0_to_v(extracted) -> None:
    params, root = extracted
    model = _model(params)
    dc = model.data_config
    frames = FrameStore(StagePaths.from_params(params).frames, "train")
    store = FeatureStore(root, "train")
    assert store.paths == frames.paths and store.labels.tolist() == frames.labels.tolist()
    assert len(store) == 2 and store.views == 2 and store.num_frames == 4
    clips = ClipDataset(frames, num_frames=4, train=True, mean=dc["mean"], std=dc["std"],
                        crop_size=int(dc["input_size"][-1]), seed=params.base.seed)
    with torch.no_grad():
        for i in range(len(store)):
            for view in range(store.views):
                clips.set_epoch(view)
                clip, label = clips[i]
                _assert_features(store.view(i, view), model.extract(clip[None]), label)
    levels, pooled, _ = store.all_views(0)
    assert pooled.shape == (2, 4, 192) and [lvl.shape for lvl in levels] == [(2, 4, 2, 2, 192)] * 4
    assert not np.array_equal(pooled[0], pooled[1]), "the two epochs' views must differ (augmentation)"


def test_eval_views_are_the_backbone_outputs_of_evaluates_protocol_views(extracted) -> None:
    from madapter.evaluate import protocol_videos

    params, root = extracted
    model = _model(params)
    protocol = ViewProtocol.from_params(params, model.data_config)
    paths = StagePaths.from_params(params)
    raw = paths.raw.resolve()
    for split in ("val", "test"):
        store = FeatureStore(root, split)
        videos = protocol_videos(paths, split)
        assert store.paths == [Path(v.path).relative_to(raw).as_posix() for v in videos]
        assert len(store) == 2 and store.views == params.evaluate.clips * params.evaluate.crops == 2
        with torch.no_grad():
            for i, video in enumerate(videos):
                views = load_video_views(Path(video.path), protocol, video.start, video.end, params.decode.backend)
                want = model.extract(views.tensor)
                levels, pooled, label = store.all_views(i)
                assert label == video.label
                for stored, ref in zip([*levels, pooled], [*want.levels, want.pooled], strict=True):
                    np.testing.assert_allclose(stored.astype(np.float32), ref.numpy(), **FP16)


def test_features_json_records_identity_shapes_counts_and_cache_key(extracted) -> None:
    params, root = extracted
    paths = StagePaths.from_params(params)
    meta = read_features_meta(root)
    model = _model(params)
    assert meta["format"] == FORMAT and meta["enabled"] is True
    assert meta["backbone"] == describe_backbone(model) and meta["backbone"]["levels"] == [2, 5, 8, 11]
    assert meta["model_cfg"] == params.model.model_dump(mode="json")
    assert meta["data_config"]["input_size"] == [3, 32, 32] and len(meta["data_config"]["mean"]) == 3
    assert meta["classes"] == FrameStore(paths.frames, "train").classes and meta["num_frames"] == 4
    assert meta["levels"] == [{"index": b, "channels": 192, "grid": [2, 2]} for b in (2, 5, 8, 11)]
    assert meta["pooled_dim"] == 192 and meta["dtype"] == "float16" and meta["level_pool"] is None
    assert {s: (v["videos"], v["views"], v["views_total"]) for s, v in meta["splits"].items()} == {
        "train": (2, 2, 4), "val": (2, 2, 4), "test": (2, 2, 4)}
    assert meta["splits"]["train"]["shards"] == 2  # shard_size 3 views // 2 views = one video per shard
    assert meta["bytes"] == sum(f.stat().st_size for f in root.rglob("*.npy"))
    key = meta["cache_key"]
    assert key["weights_digest"] == "random-init:seed=0" and key["frame_store"] == store_digest(paths.frames)
    assert key["views"] == {"train": 2, "clips": 2, "crops": 1} and key["seed"] == 0 and key["img_size"] == 32
    timing = json.loads((paths.timings / "features.json").read_text())
    assert timing["stage"] == "features" and timing["videos"] == 6 and timing["seconds"] > 0
    assert "seconds" not in json.dumps(meta)  # no timings in the DVC-hashed output


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_bytes_on_a_second_run_with_other_actors_and_batch_size(extracted, data_copy: Path) -> None:
    """Run control (``features.actors``, ``features.batch_size``) never changes a byte."""
    _, first = extracted
    params = feature_params(data_copy, features={"actors": 2, "batch_size": 1})
    second = extract_features(params)
    assert second == StagePaths.from_params(params).features
    digests = _digests(second)
    assert digests == _digests(first)
    assert not second.with_name(second.name + ".partial").exists()
    assert {"features.json", "train/manifest.csv", "train/level3-shard-00001.npy", "test/pooled-shard-00001.npy"} \
        <= set(digests)


def test_model_level_pool_stores_each_level_grid_as_the_mean_of_its_tokens(extracted, data_copy: Path) -> None:
    """The model pools (``model.level_pool``) and the stage stores exactly what ``extract`` gives."""
    _, full_root = extracted
    params = feature_params(data_copy, model={"level_pool": 1})
    root = extract_features(params)
    meta = read_features_meta(root)
    assert meta["level_pool"] == meta["backbone"]["level_pool"] == meta["model_cfg"]["level_pool"] == 1
    assert [lvl["grid"] for lvl in meta["levels"]] == [[1, 1]] * 4 and meta["cache_key"]["level_pool"] == 1
    pooled_store, full_store = FeatureStore(root, "test"), FeatureStore(full_root, "test")
    levels, pooled, _ = pooled_store.all_views(1)
    full_levels, full_pooled, _ = full_store.all_views(1)
    assert [lvl.shape for lvl in levels] == [(2, 4, 1, 1, 192)] * 4
    np.testing.assert_array_equal(pooled, full_pooled)
    for small, big in zip(levels, full_levels, strict=True):
        mean = big.astype(np.float32).mean(axis=(2, 3), keepdims=True)
        np.testing.assert_allclose(small.astype(np.float32), mean, rtol=2e-3, atol=2e-3)
    assert meta["bytes"] < read_features_meta(full_root)["bytes"]


def test_linear_tuning_stores_the_pooled_feature_only_in_the_chosen_dtype(extracted, data_copy: Path) -> None:
    _, full_root = extracted
    params = feature_params(data_copy, model={"tuning": "linear"}, features={"dtype": "float32"})
    root = extract_features(params)
    meta = read_features_meta(root)
    assert meta["levels"] == [] and meta["dtype"] == "float32" and meta["backbone"]["tuning"] == "linear"
    assert not list(root.rglob("level*.npy"))
    levels, pooled, _ = FeatureStore(root, "train").view(1, 1)
    _, ref, _ = FeatureStore(full_root, "train").view(1, 1)
    assert levels == [] and pooled.dtype == np.float32 and pooled.shape == (4, 192)
    np.testing.assert_allclose(pooled.astype(np.float16), ref, rtol=0, atol=0)
