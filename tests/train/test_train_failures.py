"""Training failures a user did not cause in code end in one line naming what and where.

Real Ray Train and a real MLflow server: a worker that dies on a damaged frame shard, and a GPU
run asked of a cluster without GPUs (which Ray would otherwise wait on forever).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from mlflow import MlflowClient

from madapter.errors import StageError
from madapter.train.driver import train
from tests.common.synthetic_data import make_params

pytestmark = pytest.mark.integration


def _status(uri: str, run_name: str) -> tuple[str, dict[str, str]]:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("madapter-tests")
    (run,) = client.search_runs([experiment.experiment_id], filter_string=f"attributes.run_name = '{run_name}'")
    return run.info.status, run.data.tags


def test_a_worker_that_dies_gives_one_line_with_its_rank_and_cause(
    data_dir: Path, mlflow_server: str, ray_session, tmp_path: Path
) -> None:
    broken = tmp_path / "data"
    shutil.copytree(data_dir, broken)
    shard = next((broken / "frames" / "synthetic" / "train").glob("shard-*.npy"))
    shard.write_bytes(shard.read_bytes()[:1000])  # a truncated shard: a disk or copy gone wrong
    params = make_params(broken, tmp_path / "out-broken", mlflow_server,
                         train={"epochs": 1, "num_workers": 1, "max_failures": 0})
    with pytest.raises(StageError) as err:
        train(params)
    line = str(err.value)
    assert "\n" not in line
    assert "worker rank 0 failed" in line and "run train again" in line
    assert f"{shard}: cannot read this frame shard" in line and "re-run the decode stage" in line, line
    status, tags = _status(mlflow_server, params.train.run_name)
    assert status == "FAILED" and tags["madapter.stop_reason"].startswith("failed:")


def test_gpu_workers_on_a_cluster_without_gpus_are_refused_before_any_worker_starts(
    data_dir: Path, mlflow_server: str, ray_session, tmp_path: Path
) -> None:
    params = make_params(data_dir, tmp_path / "out-gpu", mlflow_server, train={"use_gpu": True, "num_workers": 1})
    with pytest.raises(StageError, match=r"need 1 GPU but the Ray cluster has 0; set train.use_gpu: false"):
        train(params)
    assert not (tmp_path / "out-gpu" / "ray").exists() or not any((tmp_path / "out-gpu" / "ray").rglob("epoch-*"))
    assert _status(mlflow_server, params.train.run_name)[0] == "FAILED"
