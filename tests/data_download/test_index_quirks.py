"""Index details that the end-to-end fixtures do not reach: case quirks, synthetic through the list path."""

from __future__ import annotations

import json

from madapter.data.acquire.download import download_dataset
from madapter.data.index.layouts import ssv2_template, ucf101
from madapter.data.index.schema import read_index
from madapter.data.index.stage import build_index
from tests.data_download.conftest import make_params


def test_ucf101_folder_case_differs_between_lists_and_disk(tmp_path):
    """Some UCF101 copies write ``HandStandPushups/`` in the lists while the folder is ``HandstandPushups``."""
    ann = tmp_path / "ucfTrainTestlist"
    ann.mkdir()
    (ann / "classInd.txt").write_text("1 HandstandPushups\r\n")
    (ann / "trainlist01.txt").write_text("HandStandPushups/v_HandStandPushups_g08_c01.avi 1\r\n")
    (ann / "testlist01.txt").write_text("HandStandPushups/v_HandStandPushups_g01_c01.avi\r\n")
    videos = tmp_path / "UCF-101" / "HandstandPushups"
    videos.mkdir(parents=True)
    for g in ("08", "01"):
        (videos / f"v_HandStandPushups_g{g}_c01.avi").write_bytes(b"v")
    table = ucf101(tmp_path, fold=1)
    assert [r.path for r in table.rows["train"]] == ["UCF-101/HandstandPushups/v_HandStandPushups_g08_c01.avi"]
    assert [(r.label, r.label_name) for r in table.rows["test"]] == [(0, "HandstandPushups")]
    assert table.missing == []


def test_ssv2_template_brackets_are_stripped():
    assert ssv2_template("Putting [something] into [something]") == "Putting something into something"


def test_synthetic_set_goes_through_the_same_index_path(tmp_path):
    params = make_params(
        tmp_path, "synthetic", dataset={"synthetic": {"videos_per_class": 3, "num_frames": 4, "size": 16, "classes": 2}}
    )
    raw = download_dataset(params)
    index = build_index(params)
    classes = (index / "classes.txt").read_text().splitlines()
    assert classes == (raw / "classes.txt").read_text().splitlines()
    rows = [r for split in ("train", "val", "test") for r in read_index(index, split)]
    listed = sum(len((raw / f"{s}.txt").read_text().splitlines()) for s in ("train", "val", "test"))
    assert len(rows) == listed > 0
    assert all((raw / r.path).suffix == ".mp4" and (raw / r.path).stat().st_size > 0 for r in rows)
    assert all(classes[r.label] == r.label_name for r in rows)
    assert json.loads((index / "index_report.json").read_text())["missing_count"] == 0
