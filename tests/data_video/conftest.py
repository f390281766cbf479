"""Fixtures for the video data tests: real synthetic mp4 files and index CSVs in the shared schema.

The index stage is another module; these tests write the index CSVs directly (from the list files
the synthetic generator writes, through the index artefact's writer in
:mod:`madapter.data.index.schema`) so scan/decode are tested on their own contract.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from madapter.config import Params, params_from_dict
from madapter.data.acquire.synthetic import generate_synthetic
from madapter.data.index.schema import SPLITS, Row, write_classes, write_split
from madapter.paths import StagePaths


def write_index(index_dir: Path, rows_by_split: dict[str, list[tuple[str, int]]], classes: list[str]) -> None:
    """Write ``{split}.csv`` + ``classes.txt`` in the index schema (surrogateescape keeps odd names)."""
    for split in SPLITS:
        rows = [Row(rel, label, classes[label], split) for rel, label in rows_by_split.get(split, [])]
        write_split(index_dir, split, rows)
    write_classes(index_dir, classes)


def index_from_lists(raw: Path, index_dir: Path) -> None:
    """The synthetic list files (``rel label`` lines) -> index CSVs."""
    classes = (raw / "classes.txt").read_text().split()
    rows = {}
    for split in ("train", "val", "test"):
        rows[split] = [(line.rsplit(maxsplit=1)[0], int(line.rsplit(maxsplit=1)[1]))
                       for line in (raw / f"{split}.txt").read_text().splitlines() if line.strip()]
    write_index(index_dir, rows, classes)


def make_params(tmp_path: Path, **sections: dict) -> Params:
    data = {"base": {"data_dir": str(tmp_path / "data"), "outputs_dir": str(tmp_path / "outputs"), "seed": 0},
            "dataset": {"name": "synthetic", "synthetic": {"videos_per_class": 3, "classes": 4}},
            "scan": {"workers": 1, "timeout_s": 20},
            "decode": {"workers": 1, "frames_per_video": 8, "size": 32, "shard_size": 3},
            "model": {"num_frames": 4}}  # fewer than the stored frames: training jitters in time
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return params_from_dict(data, "test")


@pytest.fixture
def synthetic_params(tmp_path: Path) -> Params:
    """A tiny synthetic dataset generated and indexed under ``tmp_path``."""
    params = make_params(tmp_path)
    paths = StagePaths.from_params(params)
    generate_synthetic(paths.raw, params.dataset.synthetic, params.base.seed)
    index_from_lists(paths.raw, paths.index)
    return params


