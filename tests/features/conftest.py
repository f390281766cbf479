"""Fixtures for the features stage: a tiny real dataset (the real download -> index -> scan -> decode
stage functions on the synthetic set) and ONE local Ray for the whole folder.

Each test that extracts gets its own copy of the small data directory (:func:`data_copy`), so runs
with different params never see each other's output.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from madapter.config import Params
from tests.common.fixtures import local_ray, stop_ray_after_this_folder
from tests.common.synthetic_data import build_synthetic_data, params_with, synthetic_sections


def feature_params(root: Path, **sections: dict[str, Any]) -> Params:
    """The smallest honest setup: 2 classes x 3 real mp4 videos (one per split and class), 8 stored
    frames of 32 px, a random-init ViT-tiny at 32 px on 4 frames, 2 training views, 2 x 1 eval views."""
    data: dict[str, dict[str, Any]] = {
        "base": {"data_dir": str(root / "data"), "outputs_dir": str(root / "outputs"), "seed": 0},
        **synthetic_sections(classes=2, videos_per_class=3, num_frames=12, size=40, frames_per_video=8,
                             decode_size=32, shard_size=4),
        "model": {"img_size": 32, "num_frames": 4},
        "evaluate": {"clips": 2, "crops": 1},
        "features": {"train_views": 2, "batch_size": 4, "shard_size": 3},
        "train": {"source": "features"},
    }
    return params_with(data, sections, "test")


@pytest.fixture(scope="session")
def dataset_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``<root>/data/{raw,index,scan,frames}`` built by the real data stage functions, once per session."""
    root = tmp_path_factory.mktemp("features-data")
    build_synthetic_data(feature_params(root))
    return root


@pytest.fixture
def data_copy(dataset_root: Path, tmp_path: Path) -> Path:
    """A private copy of the session's data directory (raw, index, scan, frames): a few hundred kB."""
    shutil.copytree(dataset_root / "data", tmp_path / "data")
    return tmp_path


@pytest.fixture(scope="package")
def extracted(dataset_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Params, Path]:
    """The features of the default test params, extracted once for the read-only tests."""
    from madapter.data.features.stage import extract_features

    local_ray()
    root = tmp_path_factory.mktemp("features-extracted")
    shutil.copytree(dataset_root / "data", root / "data")
    params = feature_params(root)
    return params, extract_features(params)


_stop_ray_after_this_folder = pytest.fixture(scope="package", autouse=True)(stop_ray_after_this_folder)
"""the features stage runs on Ray Data: see :func:`tests.common.fixtures.stop_ray_after_this_folder`."""

