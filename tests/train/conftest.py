"""Fixtures for the training tier: real synthetic data, a real MLflow server, a real Ray session.

Everything heavy is session-scoped and built once: the synthetic set goes through the real
pipeline functions (download -> index -> scan -> decode, real mp4 files decoded by decord), the
MLflow server is a real ``mlflow server`` subprocess (SQLite + local artifacts) on a free
loopback port, and one local Ray instance (bounded object store, no dashboard) serves every
training run of the tier.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import torch

from madapter.config import Params, params_from_dict
from madapter.paths import StagePaths

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # the machine is shared: keep the driver side on one core


@pytest.fixture(autouse=True)
def _quiet_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="madapter")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    """Poll ``url`` until it answers 200; fail with the server's log tail if it dies or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.5)
    proc.kill()
    pytest.fail(f"{url} did not answer within {timeout}s:\n{log.read_text()[-3000:]}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


TINY_DATA: dict[str, Any] = {
    "dataset": {"name": "synthetic", "synthetic": {"classes": 4, "videos_per_class": 9, "num_frames": 8, "size": 32}},
    "scan": {"workers": 1, "timeout_s": 30},
    "decode": {"workers": 1, "frames_per_video": 8, "size": 32, "shard_size": 64},
    "model": {"img_size": 32, "num_frames": 4, "width": 64},
    "evaluate": {"batch_size": 8},
}


def make_params(data_dir: Path, outputs: Path, tracking_uri: str | None = None, **sections: dict) -> Params:
    """Tiny params: shared data dir, one outputs dir (and Ray storage) per scenario."""
    data: dict[str, Any] = {k: dict(v) for k, v in TINY_DATA.items()}
    data["base"] = {"seed": 0, "data_dir": str(data_dir), "outputs_dir": str(outputs)}
    data["train"] = {
        "epochs": 3, "batch_size": 4, "lr": 3e-3, "num_workers": 2, "cpus_per_worker": 1,
        "max_failures": 2, "storage_path": str(outputs / "ray"), "run_name": outputs.name,
    }
    data["mlflow"] = {"tracking_uri": tracking_uri, "experiment": "madapter-tests"}
    for key, value in sections.items():
        data.setdefault(key, {}).update(value)
    return params_from_dict(data, "tests/train")


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic set through the REAL data stages (mp4 files, decord scan and decode)."""
    from madapter.data.acquire.download import download_dataset
    from madapter.data.index.stage import build_index
    from madapter.data.store.decode import decode_dataset
    from madapter.data.store.scan import scan_videos

    root = tmp_path_factory.mktemp("train-data")
    params = make_params(root / "data", root / "unused")
    for stage in (download_dataset, build_index, scan_videos, decode_dataset):
        stage(params)
    assert (StagePaths.from_params(params).frames / "train" / "manifest.csv").is_file()
    return root / "data"


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A real ``mlflow server`` (SQLite backend, local artifact destination) on a free loopback port."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = root / "server.log"
    cmd = [
        str(BIN / "mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]
    env = {**os.environ, "MLFLOW_TRACKING_URI": ""}
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{uri}/health", proc, timeout=90, log=log)
        yield uri
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole tier: 2 CPUs, small object store, no dashboard, the job env train() uses."""
    import ray

    from madapter.ray_runtime import worker_runtime_env

    if ray.is_initialized():  # another folder's Ray still up (tests run together): use it, leave it
        yield
        return
    ray.init(
        num_cpus=2,
        object_store_memory=200 * 2**20,
        include_dashboard=False,
        runtime_env=worker_runtime_env(),
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def trained(data_dir: Path, mlflow_server: str, ray_session, tmp_path_factory: pytest.TempPathFactory):
    """A real 2-worker CPU TorchTrainer run long enough to learn the training set, plus its params."""
    from madapter.train.driver import train

    outputs = tmp_path_factory.mktemp("trained") / "trained"
    params = make_params(data_dir, outputs, mlflow_server, train={"epochs": 20})
    started = time.perf_counter()
    result = train(params)
    logging.getLogger(__name__).info("trained fixture: %.1fs", time.perf_counter() - started)
    return params, result
