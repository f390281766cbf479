"""A test split that repeats val (the index's copy when test labels are withheld: SSv2, Kinetics-700)
is decoded and stored ONCE: the store records ``same_as`` and every reader resolves test to val's
shards, and the features stage plans no second extraction of it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import madapter.data.store.decode as decode_module
from madapter.config import Params
from madapter.data.features.feature_store import SplitSummary
from madapter.data.features.stage import link_repeated_splits, plan_videos
from madapter.data.index.schema import Row, eval_split, read_index, write_split
from madapter.data.store.decode import decode_dataset, repeated_split
from madapter.data.store.frame_store import FrameStore, has_split, stored_split
from madapter.data.store.scan import scan_videos
from madapter.paths import StagePaths


@pytest.fixture
def test_repeats_val(synthetic_params: Params, monkeypatch: pytest.MonkeyPatch) -> tuple[Params, list[str]]:
    """The synthetic set with ``test.csv`` rewritten as the index writes a withheld test: val's rows; decode run
    inline with every decoded path recorded."""
    paths = StagePaths.from_params(synthetic_params)
    val = read_index(paths.index, "val")
    assert val, "the synthetic fixture must have val videos"
    write_split(paths.index, "test", [Row(r.path, r.label, r.label_name, "test", r.start, r.end) for r in val])
    scan_videos(synthetic_params)
    decoded: list[str] = []
    real = decode_module.decode_video

    def counting(job, *args, **kwargs):
        decoded.append(job.row.path)
        return real(job, *args, **kwargs)

    monkeypatch.setattr(decode_module, "decode_video", counting)  # decode.workers: 1 runs inline
    decode_dataset(synthetic_params)
    return synthetic_params, decoded


def test_test_copy_of_val_is_decoded_once_and_reads_as_val(test_repeats_val: tuple[Params, list[str]]) -> None:
    params, decoded = test_repeats_val
    paths = StagePaths.from_params(params)
    train, val = read_index(paths.index, "train"), read_index(paths.index, "val")
    assert sorted(decoded) == sorted(r.path for r in train + val)  # each video once: no third pass for test
    root = paths.frames
    assert not (root / "test").exists()
    meta = json.loads((root / "store.json").read_text())
    assert meta["splits"]["test"]["same_as"] == "val"
    assert meta["splits"]["test"]["videos"] == meta["splits"]["val"]["videos"] == len(val)
    assert meta["videos"] == len(train) + len(val)
    assert meta["bytes"] == sum(p.stat().st_size for p in root.rglob("shard-*"))  # bytes on disk, not twice

    assert has_split(root, "test") and stored_split(root, "test") == "val" and stored_split(root, "val") == "val"
    test, val_store = FrameStore(root, "test"), FrameStore(root, "val")
    assert test.split == "test" and test.paths == val_store.paths
    assert np.array_equal(test.labels, val_store.labels)
    for i in range(len(test)):
        assert np.array_equal(test[i][0], val_store[i][0])
    assert eval_split(paths.index, "val") == "val"


def test_features_plan_no_second_extraction_and_link_val(test_repeats_val: tuple[Params, list[str]],
                                                          tmp_path: Path) -> None:
    params, _ = test_repeats_val
    paths = StagePaths.from_params(params)
    plan = plan_videos(params, paths)
    assert len(plan.jobs["val"]) == len(read_index(paths.index, "val")) > 0
    assert plan.jobs["test"] == []  # nothing to extract for test ...

    building = tmp_path / "features.partial"  # ... it gets val's files once val's are written
    (building / "val").mkdir(parents=True)
    (building / "val" / "manifest.csv").write_text("path,label\n")
    (building / "val" / "pooled-00000.npy").write_bytes(b"features")
    (building / "test").mkdir()
    (building / "test" / "manifest.csv").write_text("path,label\n")  # what the empty test writer leaves
    summary = SplitSummary(videos=3, views=27, shards=1, bytes=8)
    linked = link_repeated_splits(paths.frames.resolve(), building, {"val": summary, "test": SplitSummary(0, 0, 0, 0)})
    assert linked == {"test": summary}
    assert sorted(p.name for p in (building / "test").iterdir()) == ["manifest.csv", "pooled-00000.npy"]
    assert (building / "test" / "pooled-00000.npy").read_bytes() == b"features"


def test_only_identical_rows_repeat_a_split() -> None:
    a = [Row("x.mp4", 0, "a", "val"), Row("y.mp4", 1, "b", "val")]
    same = [Row("x.mp4", 0, "a", "test"), Row("y.mp4", 1, "b", "test")]
    assert repeated_split(same, {"train": [], "val": a}) == "val"
    assert repeated_split(same[:1], {"val": a}) is None
    assert repeated_split([Row("x.mp4", 0, "a", "test", 1.0, 2.0), same[1]], {"val": a}) is None  # other segment
    assert repeated_split(list(reversed(same)), {"val": a}) is None  # other order: other manifest
    assert repeated_split([], {"val": []}) is None
