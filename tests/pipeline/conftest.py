"""Fixtures for the orchestration tests: the CLI as a user runs it, and throw-away repo copies.

Integration tests never touch the developer's checkout: they copy the source tree (no data, no
outputs, no .venv) into a temporary git repository and run DVC / Prefect there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prefect.testing.utilities import prefect_test_harness

REPO = Path(__file__).resolve().parents[2]

TOP_LEVEL_SKIP = {
    ".git", ".venv", "data", "outputs", "mlruns", "mlartifacts", "mlflow.db", ".dvc-remote", ".prefect", "dvc.lock",
    ".pytest_cache", ".ruff_cache", "build", "dist",
}
"""What a fresh clone would not have: run products (incl. the dvc.lock of a local run), caches, the virtualenv."""
ANYWHERE_SKIP = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")


def _copy_ignore(directory: str, names: list[str]) -> set[str]:
    skipped = set(ANYWHERE_SKIP(directory, names))
    if Path(directory).resolve() == REPO:
        skipped |= TOP_LEVEL_SKIP & set(names)
    if Path(directory).resolve() == REPO / ".dvc":
        skipped |= {"cache", "tmp", "config.local"} & set(names)
    if Path(directory).resolve() == REPO / "benchmarks":
        skipped |= {"results"} & set(names)
    return skipped


# The smallest pipeline that still exercises every stage for real: 2 synthetic classes x 3 real
# mp4 videos, 8 decoded frames of 32x32, a random-init ViT-tiny on 4 frames, 1 epoch, 1 Ray worker.
SMALLEST_OVERRIDES: dict[str, Any] = {
    "dataset": {"synthetic": {"classes": 2, "videos_per_class": 3, "num_frames": 8, "size": 32}},
    "scan": {"workers": 1},
    "decode": {"frames_per_video": 8, "size": 32, "workers": 1},
    "model": {"img_size": 32, "num_frames": 4, "width": 32},
    "train": {"epochs": 1, "batch_size": 2, "num_workers": 1, "warmup_epochs": 0.0, "run_name": "pipeline-test"},
    "evaluate": {"batch_size": 4},
}


def clean_env() -> dict[str, str]:
    """Environment for subprocesses: this venv first on PATH, no inherited MLflow/Ray targets."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    for key in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "PREFECT_API_URL"):
        env.pop(key, None)
    env["DVC_NO_ANALYTICS"] = "1"
    env["RAY_DISABLE_USAGE_STATS"] = "1"
    return env


def run_cli(args: list[str], cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    """``python -m madapter ARGS`` in ``cwd``, exactly as a user (or a DVC stage) runs it."""
    return subprocess.run(
        [sys.executable, "-m", "madapter", *args],
        cwd=cwd,
        env={**clean_env(), "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run(cmd: list[str], cwd: Path, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def deep_update(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def write_params(repo: Path, changes: dict[str, Any]) -> dict[str, Any]:
    data = yaml.safe_load((repo / "params.yaml").read_text())
    deep_update(data, changes)
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return data


def copy_repo(dst: Path) -> Path:
    """A fresh git repository holding this checkout's source tree (what a clone would have)."""
    shutil.copytree(REPO, dst, ignore=_copy_ignore)
    git = ["git", "-c", "user.email=test@madapter.local", "-c", "user.name=madapter tests"]
    run(["git", "init", "-q"], dst)
    run([*git, "add", "-A"], dst)
    run([*git, "commit", "-q", "-m", "copy of the working tree"], dst)
    return dst


@pytest.fixture(scope="session")
def harness():
    """Prefect's test harness: a real, temporary Prefect API (SQLite) for the whole session.

    The server's telemetry heartbeat is switched off: there is no network here, and on a busy
    2-core machine its writes only compete with the flow runs for the SQLite lock.
    """
    saved = os.environ.get("PREFECT_SERVER_ANALYTICS_ENABLED")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    try:
        with prefect_test_harness(server_startup_timeout=120):
            yield
    finally:
        if saved is None:
            os.environ.pop("PREFECT_SERVER_ANALYTICS_ENABLED", None)
        else:
            os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = saved
