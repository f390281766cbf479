"""Bad videos end in the quarantine with a reason; decoding and clip loading on the rest proceed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from madapter.config import Params
from madapter.data.acquire.synthetic import encode_video
from madapter.data.clips import ClipDataset
from madapter.data.index.schema import SPLITS, read_classes, read_index
from madapter.data.store.decode import decode_dataset
from madapter.data.store.frame_store import FrameStore
from madapter.data.store.quarantine import read_quarantine
from madapter.data.store.scan import scan_videos
from madapter.paths import StagePaths

from .conftest import index_from_lists, make_params, write_index

BAD_NAME = os.fsdecode(b"bad/caf\xe9.mp4")  # a Latin-1 file name: not valid UTF-8


def add_bad_videos(raw: Path, rng: np.random.Generator) -> dict[str, str]:
    """Write one bad file per failure kind next to the good ones; returns ``{rel path: expected kind}``."""
    bad = raw / "bad"
    bad.mkdir()
    good = raw / "grow/grow_000.mp4"
    (bad / "zero.mp4").touch()
    (bad / "truncated.mp4").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    (bad / "random.mp4").write_bytes(rng.integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    encode_video(bad / "two frames.mp4", rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8), fps=8)
    (raw / BAD_NAME).write_bytes(good.read_bytes())  # a fine video under an unusable name
    os.mkfifo(bad / "stalled.mp4")  # opening it blocks forever, like a hung network mount
    return {"bad/zero.mp4": "empty", "bad/truncated.mp4": "unreadable", "bad/random.mp4": "unreadable",
            "bad/two frames.mp4": "too_short", BAD_NAME: "bad_name", "bad/stalled.mp4": "timeout",
            "bad/missing.mp4": "missing"}


@pytest.fixture
def dataset_with_bad_videos(tmp_path: Path) -> tuple[Params, dict[str, str]]:
    from madapter.data.acquire.synthetic import generate_synthetic

    params = make_params(tmp_path, scan={"workers": 2, "timeout_s": 4})
    paths = StagePaths.from_params(params)
    generate_synthetic(paths.raw, params.dataset.synthetic, params.base.seed)
    index_from_lists(paths.raw, paths.index)
    expected = add_bad_videos(paths.raw, np.random.default_rng(0))
    classes = read_classes(paths.index)
    rows = {split: [(r.path, r.label) for r in read_index(paths.index, split)] for split in SPLITS}
    rows["train"] += [(rel, 0) for rel in expected]
    write_index(paths.index, rows, classes)
    return params, expected


def test_bad_videos_are_quarantined_with_reasons_and_the_rest_decodes(
    dataset_with_bad_videos: tuple[Params, dict[str, str]],
) -> None:
    params, expected = dataset_with_bad_videos
    paths = StagePaths.from_params(params)

    scan_dir = scan_videos(params)
    quarantine = read_quarantine(scan_dir)
    assert set(quarantine) == set(expected)
    assert all(reason.strip() and "\n" not in reason for reason in quarantine.values())
    report = json.loads((scan_dir / "report.json").read_text())
    kinds = {entry["path"]: entry["kind"] for entry in report["quarantine"]}
    assert {rel.encode("utf-8", "backslashreplace").decode(): kind for rel, kind in expected.items()} == kinds
    assert report["videos"] == 12 + len(expected) and report["ok"] == 12
    assert report["quarantined"] == len(expected) and report["frames"]["min"] == 16
    assert "scan.min_frames" in quarantine["bad/two frames.mp4"]
    assert "timeout_s" in quarantine["bad/stalled.mp4"]

    frames_dir = decode_dataset(params)
    meta = json.loads((frames_dir / "store.json").read_text())
    assert meta["dropped_quarantined"]["train"] == len(expected) and meta["failed"] == []
    train = FrameStore(frames_dir, "train")
    assert len(train) == 4 and not set(train.paths) & set(expected)

    clips = ClipDataset(train, num_frames=4, train=True, mean=(0.5,) * 3, std=(0.5,) * 3, crop_size=32, seed=0)
    batch = [clips[i][0] for i in range(len(clips))]  # "training on the rest proceeds"
    assert all(x.shape == (4, 3, 32, 32) and bool(x.isfinite().all()) for x in batch)
    assert (paths.raw / BAD_NAME).is_file()  # nothing is deleted: the quarantine is a list, not a purge


def test_decode_refuses_to_run_before_scan(synthetic_params: Params) -> None:
    with pytest.raises(FileNotFoundError, match="run the scan stage first"):
        decode_dataset(synthetic_params)
