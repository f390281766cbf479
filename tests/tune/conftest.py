"""Fixtures for the sweep tier: the train tier's real synthetic data and real ``mlflow server``
(imported from ``tests/train/conftest.py``, not copied), and ONE local Ray that the
``python -m madapter tune`` subprocesses join through ``RAY_ADDRESS``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.train.conftest import make_params

REPO = Path(__file__).resolve().parents[2]

SPACE: dict[str, Any] = {
    "lr": [1.0e-5, 0.1],                 # four decades: the trials' losses differ clearly
    "weight_decay": [],                  # not searched: the preset must not hold it
    "width": [32, 64],
    "levels": [None, [5, 11]],           # a choice of level lists (frames: any levels can be trained)
    "temporal": ["conv", "none"],
    "fusion": ["add", "gated"],
}


@pytest.fixture(scope="module")
def ray_address():
    """The local Ray of this pytest process (2 CPUs), started here unless another tier's is running."""
    import ray

    from madapter.ray_runtime import worker_runtime_env

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, object_store_memory=200 * 2**20, include_dashboard=False, runtime_env=worker_runtime_env())
    yield ray.get_runtime_context().gcs_address
    if started:
        ray.shutdown()


def write_sweep_params(root: Path, data: Path, tracking_uri: str, **tune: Any) -> Path:
    """A params file for a tiny sweep: the train tier's tiny data and model, trials on frames."""
    section = {"name": "sweep", "trials": 4, "max_epochs": 3, "grace_period": 1, "reduction_factor": 2,
               "metric": "train_loss", "max_concurrent_trials": 1, "storage_path": str(root / "tune"),
               "output": str(root / "best.yaml"), "space": SPACE, **tune}
    params = make_params(data, root / "outputs", tracking_uri, train={"warmup_epochs": 0.0, "source": "frames"},
                         tune=section)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    return path


def cli_env(ray_address: str | None = None) -> dict[str, str]:
    """The environment a user's shell would give ``python -m madapter``: this venv, no inherited MLflow target."""
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONPATH"] = str(REPO)
    env["RAY_DISABLE_USAGE_STATS"] = "1"
    if ray_address:
        env["RAY_ADDRESS"] = ray_address
    return env


def madapter(args: list[str], cwd: Path, ray_address: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m madapter ARGS`` in a subprocess, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "madapter", *args], cwd=cwd, env=cli_env(ray_address),
                          capture_output=True, text=True, timeout=timeout)
