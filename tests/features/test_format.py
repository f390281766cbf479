"""The features artefact's writer and reader on their own (no backbone, no Ray)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from madapter.data.features.feature_store import (
    FEATURES_META,
    FeaturesError,
    FeatureStore,
    FeatureWriter,
    LevelSpec,
    write_features_meta,
)

SPECS = [LevelSpec(2, 8, (3, 2)), LevelSpec(5, 4, (1, 1))]


def _video(rng: np.random.Generator, views: int) -> tuple[list[np.ndarray], np.ndarray]:
    return ([rng.standard_normal((views, 4, 3, 2, 8)), rng.standard_normal((views, 4, 1, 1, 4))],
            rng.standard_normal((views, 4, 16)))


def _meta(splits: dict[str, int]) -> dict:
    return {"enabled": True, "classes": ["a", "b"], "num_frames": 4, "levels": [s.to_json() for s in SPECS],
            "pooled_dim": 16, "dtype": "float16", "splits": {s: {"views": v} for s, v in splits.items()}}


def test_round_trip_contiguous_views_shards_and_pickling(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    writer = FeatureWriter(tmp_path / "train", SPECS, 4, 16, "float16", views=3, videos=5, shard_size=7)
    videos = [_video(rng, 3) for _ in range(5)]
    for i, (levels, pooled) in enumerate(videos):
        writer.add(f"c/v{i}.mp4", i % 2, "ab"[i % 2], levels, pooled)
    summary = writer.close()
    assert (summary.videos, summary.views, summary.shards) == (5, 15, 3)  # 7 // 3 = 2 videos per shard
    FeatureWriter(tmp_path / "test", SPECS, 4, 16, "float16", views=2, videos=0, shard_size=7).close()
    write_features_meta(tmp_path, _meta({"train": 3, "test": 2}))

    store = pickle.loads(pickle.dumps(FeatureStore(tmp_path, "train")))
    assert len(store) == 5 and store.views == 3 and store.levels == SPECS and store.pooled_dim == 16
    assert store.paths[4] == "c/v4.mp4" and store.labels.dtype == np.int64 and store.labels.tolist() == [0, 1, 0, 1, 0]
    for i, (levels, pooled) in enumerate(videos):
        got_levels, got_pooled, label = store.all_views(i)
        assert label == i % 2 and got_pooled.dtype == np.float16
        np.testing.assert_array_equal(got_pooled, pooled.astype(np.float16))
        for got, want in zip(got_levels, levels, strict=True):
            np.testing.assert_array_equal(got, want.astype(np.float16))
        one_levels, one_pooled, _ = store.view(i, 2)
        np.testing.assert_array_equal(one_pooled, got_pooled[2])
        assert [a.shape for a in one_levels] == [(4, 3, 2, 8), (4, 1, 1, 4)]
    with pytest.raises(IndexError):
        store.view(0, 3)
    assert len(FeatureStore(tmp_path, "test")) == 0


def test_writer_refuses_wrong_shapes_and_missing_videos_and_leaves_no_partial_shard(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    writer = FeatureWriter(tmp_path / "val", SPECS, 4, 16, "float32", views=2, videos=3, shard_size=10)
    levels, pooled = _video(rng, 3)
    with pytest.raises(ValueError, match=r"level0 is \[3, 4, 3, 2, 8\], the features need \[2, 4, 3, 2, 8\]"):
        writer.add("x.mp4", 0, "a", levels, pooled)
    writer.add("x.mp4", 0, "a", *_video(rng, 2))
    with pytest.raises(ValueError, match="1 videos written of the 3 announced"):
        writer.close()
    assert sorted(p.name for p in (tmp_path / "val").iterdir()) == []


def test_damaged_shard_is_one_line_naming_it(tmp_path: Path) -> None:
    writer = FeatureWriter(tmp_path / "train", SPECS, 4, 16, "float16", views=1, videos=1, shard_size=4)
    writer.add("x.mp4", 0, "a", *_video(np.random.default_rng(2), 1))
    writer.close()
    write_features_meta(tmp_path, _meta({"train": 1}))
    (tmp_path / "train" / "pooled-shard-00000.npy").write_bytes(b"\x93NUMPY broken")
    with pytest.raises(FeaturesError, match=r"pooled-shard-00000.npy: cannot read this feature shard"):
        FeatureStore(tmp_path, "train").view(0, 0)
    assert (tmp_path / FEATURES_META).is_file()
