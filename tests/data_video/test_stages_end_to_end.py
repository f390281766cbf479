"""The real stage functions in order on the synthetic set: download -> build_index -> scan -> decode."""

from __future__ import annotations

import json
from pathlib import Path

from madapter.data.acquire.download import download_dataset
from madapter.data.clips import ClipDataset
from madapter.data.index.stage import build_index
from madapter.data.store.decode import decode_dataset
from madapter.data.store.frame_store import FrameStore
from madapter.data.store.scan import scan_videos

from .conftest import make_params


def test_synthetic_through_every_data_stage(tmp_path: Path) -> None:
    params = make_params(tmp_path, decode={"workers": 2})
    raw = download_dataset(params)  # for "synthetic" this generates the videos
    build_index(params)
    report = json.loads((scan_videos(params) / "report.json").read_text())
    assert report["videos"] == 12 and report["quarantined"] == 0
    frames = decode_dataset(params)

    classes = (raw / "classes.txt").read_text().split()
    for split in ("train", "val", "test"):
        store = FrameStore(frames, split)
        listed = [line.rsplit(maxsplit=1) for line in (raw / f"{split}.txt").read_text().splitlines()]
        assert sorted(store.paths) == sorted(p for p, _ in listed)
        assert store.classes == classes
        assert {p: int(lbl) for p, lbl in listed} == dict(zip(store.paths, store.labels.tolist(), strict=True))
    ds = ClipDataset(FrameStore(frames, "train"), 8, True, (0.5,) * 3, (0.5,) * 3, crop_size=32, seed=0)
    assert ds[3][0].shape == (8, 3, 32, 32)
