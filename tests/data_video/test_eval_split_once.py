"""One decision in one place: which split stands for ``val`` (recorded by the index stage, read by
``eval_split``), which videos are evaluated (``evaluated_videos``, for evaluate and the features
stage alike), and the typed config the train driver hands its Ray workers."""

from __future__ import annotations

import dataclasses
import json
import logging
import pickle
from pathlib import Path

import pytest

from madapter.config import ConfigError, Params
from madapter.data.evaluated import evaluated_videos
from madapter.data.features.stage import plan_videos
from madapter.data.index.schema import REPORT_FILE, VAL_SPLIT, eval_split, read_index, write_split
from madapter.data.index.stage import build_index
from madapter.data.store.decode import decode_dataset
from madapter.data.store.scan import scan_videos
from madapter.evaluate import protocol_videos
from madapter.paths import StagePaths
from madapter.train.source import train_data
from madapter.train.worker_config import TrainData, WorkerConfig


def _fallbacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "has no val split" in r.getMessage()]


def test_the_index_stage_records_val_and_eval_split_reads_it_without_a_warning(
    synthetic_params: Params, caplog: pytest.LogCaptureFixture,
) -> None:
    index = build_index(synthetic_params)
    report = json.loads((index / REPORT_FILE).read_text())
    assert report[VAL_SPLIT] == "val" and report["counts"]["val"] > 0
    caplog.clear()
    assert eval_split(index, "val") == "val" and eval_split(index, "test") == "test"
    assert _fallbacks(caplog) == []


def test_a_data_set_without_val_records_test_and_the_warning_is_logged_once(
    synthetic_params: Params, caplog: pytest.LogCaptureFixture,
) -> None:
    paths = StagePaths.from_params(synthetic_params)
    (paths.raw / "val.txt").unlink()  # the list layout without val.txt: UCF101's and HMDB51's case
    index = build_index(synthetic_params)
    assert json.loads((index / REPORT_FILE).read_text())[VAL_SPLIT] == "test"
    caplog.clear()
    assert eval_split(index, "val") == "test"
    assert _fallbacks(caplog) == ["synthetic has no val split: validating and evaluating on the test split"]
    caplog.clear()
    assert eval_split(index, "test") == "test" and _fallbacks(caplog) == []  # asked for test: nothing to say


def test_an_index_written_before_the_field_falls_back_to_its_val_csv(synthetic_params: Params) -> None:
    index = StagePaths.from_params(synthetic_params).index
    assert not (index / REPORT_FILE).exists()  # the fixture writes the CSVs only
    assert eval_split(index, "val") == "val"
    (index / REPORT_FILE).write_text(json.dumps({"dataset": "synthetic", "counts": {}}))  # an old report
    assert eval_split(index, "val") == "val"
    write_split(index, "val", [])
    assert eval_split(index, "val") == "test"


def test_a_recorded_split_that_is_neither_val_nor_test_is_one_line(synthetic_params: Params) -> None:
    index = StagePaths.from_params(synthetic_params).index
    (index / REPORT_FILE).write_text(json.dumps({VAL_SPLIT: "train"}))
    with pytest.raises(ValueError) as err:
        eval_split(index, "val")
    assert "\n" not in str(err.value) and str(index / REPORT_FILE) in str(err.value)
    assert "dvc repro index" in str(err.value)


def test_evaluate_and_the_features_stage_select_the_same_videos(synthetic_params: Params) -> None:
    paths = StagePaths.from_params(synthetic_params)
    dropped = read_index(paths.index, "test")[0]
    (paths.raw / dropped.path).write_bytes(b"not a video")  # scan quarantines it: the store leaves it out
    scan_videos(synthetic_params)
    decode_dataset(synthetic_params)
    plan = plan_videos(synthetic_params, paths)
    raw = paths.raw.resolve()
    for split in ("val", "test"):
        chosen = evaluated_videos(paths, split)
        indexed = [row.path for row in read_index(paths.index, split)]
        assert [v.path for v in chosen] == [p for p in indexed if p != dropped.path]  # index order, store's videos
        assert [(j.path, j.label, j.label_name, j.source, j.start, j.end) for j in plan.jobs[split]] == \
            [(v.path, v.label, v.label_name, v.source, v.start, v.end) for v in chosen]
        assert [(s.path, s.label) for s in protocol_videos(paths, split)] == \
            [(str(raw / v.path), v.label) for v in chosen]
    assert dropped.path not in {v.path for v in evaluated_videos(paths, "test")}


def test_train_data_checks_the_frame_store_then_reads_the_index_split(synthetic_params: Params) -> None:
    paths = StagePaths.from_params(synthetic_params)
    with pytest.raises(ConfigError, match="no frame store found; run the decode stage first"):
        train_data(synthetic_params, paths)
    scan_videos(synthetic_params)
    decode_dataset(synthetic_params)
    data = train_data(synthetic_params, paths)
    assert data == TrainData(frames=paths.frames.resolve(), features=None, val_split="val")
    assert data.frames.is_absolute()


def test_the_worker_config_is_frozen_and_pickles(synthetic_params: Params, tmp_path: Path) -> None:
    from ray import cloudpickle

    config = WorkerConfig(params=synthetic_params, data=TrainData(tmp_path / "frames", None, "test"),
                          run_id="run", tracking_uri="file:///mlruns", status_dir=tmp_path / "status")
    for dumps, loads in ((pickle.dumps, pickle.loads), (cloudpickle.dumps, cloudpickle.loads)):
        assert loads(dumps(config)) == config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.run_id = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.data.val_split = "val"  # type: ignore[misc]


@pytest.fixture(autouse=True)
def _warnings_visible(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="madapter")
