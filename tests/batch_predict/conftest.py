"""Fixtures for ``batch-predict``: real synthetic videos, broken files, a real checkpoint, a real MLflow
registry.

- ``dataset``: the synthetic set through the REAL download and index stages (real mp4 files; batch
  prediction reads the index and the source videos, never the frame store, so scan/decode are not
  needed), with three bad inputs appended to the test split of the index: a truncated mp4, a text
  file named ``.mp4`` and a path with no file behind it.
- ``checkpoint``: a random-init tiny model written by the real checkpoint writer, its trainable
  weights drawn from a seeded generator so that different videos get clearly different scores
  (a zero-initialised head would give every video the same flat answer and prove nothing).
- ``registered``: that checkpoint logged as the real madapter pyfunc into a real MLflow registry
  (SQLite store), with alias ``champion``.

The pipelines run in the session's local Ray (``ray_session``, :mod:`tests.common.fixtures`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from madapter.config import Params
from madapter.data.index.schema import Row, read_index, write_split
from madapter.paths import StagePaths
from tests.common.fixtures import stop_ray_after_this_folder
from tests.common.synthetic_data import params_with, synthetic_sections

MODEL_NAME = "batch-predict-tests"
BAD = {"bad/truncated.mp4": "truncated", "bad/not_a_video.mp4": "text", "bad/missing.mp4": "missing"}
"""Bad inputs added to the test split: index path -> what is wrong with it."""


def batch_params(root: Path, **sections: dict[str, Any]) -> Params:
    """4 classes x 12 videos of 8 frames at 32 px (8 test videos), a random-init ViT-tiny at 32 px on 4
    frames, the 2 x 1 view protocol (so view averaging is exercised), top-3."""
    data: dict[str, dict[str, Any]] = {
        "base": {"data_dir": str(root / "data"), "outputs_dir": str(root / "outputs"), "seed": 0},
        **synthetic_sections(classes=4, videos_per_class=12, num_frames=8, size=32, frames_per_video=8,
                             decode_size=32, shard_size=16),
        "model": {"img_size": 32, "num_frames": 4, "width": 32},
        "evaluate": {"clips": 2, "crops": 1, "batch_size": 4, "device": "cpu"},
        "register": {"model_name": MODEL_NAME, "top_k": 3},
        "mlflow": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "experiment": "batch-predict-tests"},
        "train": {"object_store_mb": 200},
    }
    return params_with(data, sections, "tests/batch_predict")


@dataclass(frozen=True)
class Dataset:
    params: Params
    params_file: Path
    """The same params as a YAML file, for the CLI."""
    good: list[str]
    """Index paths of the readable test videos, in index order."""
    rows: list[Row]
    """The test split as the index lists it: the good videos, then the bad inputs."""

    def source(self, index_path: str) -> Path:
        return StagePaths.from_params(self.params).raw.resolve() / index_path


def _add_bad_inputs(params: Params) -> None:
    """Three unreadable inputs in the raw folder and at the end of the test split of the index."""
    paths = StagePaths.from_params(params)
    good = read_index(paths.index, "test")
    sample = (paths.raw / good[0].path).read_bytes()
    (paths.raw / "bad").mkdir()
    (paths.raw / "bad/truncated.mp4").write_bytes(sample[: len(sample) // 3])
    (paths.raw / "bad/not_a_video.mp4").write_text("this is a text file, not a video\n")
    bad = [Row(path, good[0].label, good[0].label_name, "test") for path in BAD]
    write_split(paths.index, "test", [*good, *bad])


@pytest.fixture(scope="session")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    from madapter.data.acquire.download import download_dataset
    from madapter.data.index.stage import build_index

    root = tmp_path_factory.mktemp("batch-predict")
    params = batch_params(root)
    download_dataset(params)
    build_index(params)
    good = [row.path for row in read_index(StagePaths.from_params(params).index, "test")]
    _add_bad_inputs(params)
    params_file = root / "params.yaml"
    params_file.write_text(yaml.safe_dump(json.loads(params.model_dump_json()), sort_keys=False))
    rows = read_index(StagePaths.from_params(params).index, "test")
    return Dataset(params, params_file, good, rows)


@pytest.fixture(scope="session")
def checkpoint(dataset: Dataset) -> Path:
    """A real checkpoint of a random-init model with seeded random trainable weights."""
    from madapter.data.index.schema import read_classes
    from madapter.models.build import build_model
    from madapter.models.checkpoint import save_checkpoint

    params = dataset.params
    classes = read_classes(StagePaths.from_params(params).index)
    model = build_model(params.model, num_classes=len(classes))
    generator = torch.Generator().manual_seed(0)
    state = {k: torch.randn(v.shape, generator=generator) * 0.5 for k, v in model.trainable_state_dict().items()}
    model.load_trainable_state_dict(state)
    return save_checkpoint(StagePaths.from_params(params).train / "checkpoint.pt", model, classes)


@pytest.fixture(scope="session")
def registered(dataset: Dataset, checkpoint: Path) -> str:
    """The checkpoint as the real madapter pyfunc, registered in a real MLflow registry; alias ``champion``."""
    from madapter.registry import CHAMPION, register_checkpoint

    params = dataset.params
    evaluation = {"frames": params.model.num_frames, "clips": params.evaluate.clips, "crops": params.evaluate.crops}
    register_checkpoint(params, checkpoint, evaluation, run_name="batch-predict-model")
    return f"models:/{MODEL_NAME}@{CHAMPION}"


_stop_ray_after_this_folder = pytest.fixture(scope="package", autouse=True)(stop_ray_after_this_folder)
"""batch prediction runs on Ray Data: see :func:`tests.common.fixtures.stop_ray_after_this_folder`."""

