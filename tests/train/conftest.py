"""Fixtures for the training tier: real synthetic data, a real MLflow server, a real Ray session.

Everything heavy is session-scoped and built once: the synthetic sets go through the real
pipeline functions (download -> index -> scan -> decode, real mp4 files decoded by decord, see
:mod:`tests.common.synthetic_data`), the MLflow server is a real ``mlflow server`` subprocess
(SQLite + local artifacts) on a free loopback port, and one local Ray instance (bounded object
store, no dashboard) serves every training run of the tier.

Two data sets, for two kinds of test.  ``data_dir`` (:data:`TINY_DATA`, 4 classes x 9 videos) is
for the tests of the frames path's machinery (multi-worker runs, checkpoints, resume, recovery,
failures): the backbone runs every step, so the set is as small as those tests allow; nothing is
asserted about what they learn.  ``trained`` is the model that must have LEARNED (the registry,
gate and serving tests need a model that is clearly better than chance on held-out videos): the
synthetic classes are reversal pairs whose only signal is frame order, which 4 x 9 videos cannot
teach, so it has its own bigger set (:data:`LEARN_DATA`) and is trained on cached features
(``train.source: features``), where epochs cost next to nothing.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import torch

from madapter.config import Params
from tests.common.synthetic_data import build_synthetic_data, params_with, synthetic_sections

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
    **synthetic_sections(classes=4, videos_per_class=9, num_frames=8, size=32, frames_per_video=8, decode_size=32,
                         shard_size=64),
    "model": {"img_size": 32, "num_frames": 4, "width": 64},
    "evaluate": {"batch_size": 8},
}
"""The frames-path tests' data and model: 4 classes x 9 videos (6 train, 1 val, 2 test each), 32 px."""

LEARN_DATA: dict[str, Any] = {
    **synthetic_sections(classes=4, videos_per_class=60, num_frames=8, size=32, frames_per_video=8, decode_size=32,
                         shard_size=64),
    "model": {"img_size": 32, "num_frames": 4, "width": 192},
    "evaluate": {"batch_size": 8, "loader_workers": 0},  # 40 tiny test videos: decoding in-process beats spawning
}
"""The learning test's data and model: the first 2 pairs (move_right/move_left, grow/shrink) x 60 videos
(40 train, 10 val, 10 test each), the default branch width (192).  Measured test top-1 on cached
features, lr 1e-3, 20 epochs, over head seeds and data seeds: this recipe 0.875-1.0; width 64
0.68-0.98; 4 x 24 videos 0.31-0.81; lr 2e-3 0.35-0.9; the first pair alone (``classes: 2``) x 60
videos 0.4-0.55, i.e. not at all: the grow/shrink pair is what gets the branch going."""

LEARN_EPOCHS = 20
LEARNED_TOP1 = 0.75
"""What ``trained`` must reach on its 40 held-out test videos.  Chance is 0.25; an order-blind model
can tell the pairs apart but not the twins in a pair, so it tops out at 0.5.  This recipe (2 Ray
workers, then the full model on the source videos) measured 0.925-1.0 over ``base.seed`` 0-5 (data,
init and shuffling all change with it; seed 0, the fixture's: 0.925); the lowest of 12 in-process
runs with other head and data seeds was 0.875."""


def make_params(data_dir: Path, outputs: Path, tracking_uri: str | None = None,
                data_sections: dict[str, Any] = TINY_DATA, **sections: dict) -> Params:
    """Tiny params: shared data dir, one outputs dir (and Ray storage) per scenario; ``sections``
    update the sections of ``data_sections`` (:data:`TINY_DATA` or :data:`LEARN_DATA`) and the rest."""
    data: dict[str, Any] = {
        **data_sections,
        "base": {"seed": 0, "data_dir": str(data_dir), "outputs_dir": str(outputs)},
        "train": {"epochs": 3, "batch_size": 4, "lr": 3e-3, "num_workers": 2, "cpus_per_worker": 1,
                  "max_failures": 2, "storage_path": str(outputs / "ray"), "run_name": outputs.name},
        "mlflow": {"tracking_uri": tracking_uri, "experiment": "madapter-tests"},
    }
    return params_with(data, sections, "tests/train")  # copies every section: the constants stay as they are


def learn_params(data_dir: Path, outputs: Path, tracking_uri: str | None = None, **sections: dict) -> Params:
    """The ``trained`` recipe: :data:`LEARN_DATA`, the features stage's 4 views a training video, the head
    trained on them by 2 Ray workers (``sections`` update it, e.g. ``train={"source": "frames"}``)."""
    train = {"epochs": LEARN_EPOCHS, "lr": 1e-3, "source": "features", **sections.pop("train", {})}
    features = {"train_views": 4, "batch_size": 16, **sections.pop("features", {})}
    return make_params(data_dir, outputs, tracking_uri, data_sections=LEARN_DATA, train=train, features=features,
                       **sections)


@pytest.fixture(scope="session")
def learn_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bigger synthetic set of the model that must learn (:data:`LEARN_DATA`), through the real data stages."""
    root = tmp_path_factory.mktemp("learn-data")
    return build_synthetic_data(learn_params(root / "data", root / "unused"))


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole tier: 2 CPUs, small object store, no dashboard, the job env train() uses."""
    import ray

    from madapter.ray_runtime import worker_runtime_env

    if ray.is_initialized():  # another folder's Ray still up (tests run together): use it, leave it
        yield
        return
    ray.init(
        address="local",  # never a `ray start` / test cluster that happens to run on this machine
        num_cpus=2,
        object_store_memory=200 * 2**20,
        include_dashboard=False,
        runtime_env=worker_runtime_env(),
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def trained(learn_data_dir: Path, mlflow_server: str, ray_session, tmp_path_factory: pytest.TempPathFactory):
    """The model that must have learned, plus its params: the real features stage (Ray Data, in the
    tier's Ray) on :data:`LEARN_DATA`, then a real 2-worker CPU TorchTrainer run of the head on its
    output.  Its checkpoint is the full model (backbone + branch), as a frames run's is."""
    from madapter.data.features.extract import extract_features
    from madapter.train.driver import train

    outputs = tmp_path_factory.mktemp("trained") / "trained"
    params = learn_params(learn_data_dir, outputs, mlflow_server)
    started = time.perf_counter()
    extract_features(params)
    extracted = time.perf_counter()
    result = train(params)
    logging.getLogger(__name__).info("trained fixture: features %.1fs, train %.1fs", extracted - started,
                                     time.perf_counter() - extracted)
    return params, result
