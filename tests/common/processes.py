"""Starting and stopping the real processes the integration tiers use, written once.

Servers (``mlflow server``, ``prefect server``, PostgreSQL) are polled until they answer, and a
dead or silent one fails the test with its log tail; CLI runs (``python -m madapter``, ``dvc``) get
the environment a user's shell gives them: this virtualenv first on ``PATH``, and no MLflow, Ray or
Prefect target inherited from the developer's shell.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


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


def clean_env(ray_address: str | None = None) -> dict[str, str]:
    """Environment for subprocesses: this venv first on PATH, no inherited MLflow/Ray/Prefect targets
    (``ray_address``: the Ray a ``python -m madapter`` run joins, as ``RAY_ADDRESS`` would tell it)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    for key in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS", "PREFECT_API_URL"):
        env.pop(key, None)
    env["DVC_NO_ANALYTICS"] = "1"
    env["RAY_DISABLE_USAGE_STATS"] = "1"
    if ray_address:
        env["RAY_ADDRESS"] = ray_address
    return env


def cli_env(ray_address: str | None = None) -> dict[str, str]:
    """:func:`clean_env` for ``python -m madapter``/``pipelines`` run from another directory: this
    checkout importable (``PYTHONPATH``), as in a clone whose package is installed."""
    return {**clean_env(ray_address), "PYTHONPATH": str(REPO)}


def run_cli(args: list[str], cwd: Path, timeout: float = 120,
            ray_address: str | None = None) -> subprocess.CompletedProcess:
    """``python -m madapter ARGS`` in ``cwd``, exactly as a user (or a DVC stage) runs it."""
    return subprocess.run(
        [sys.executable, "-m", "madapter", *args],
        cwd=cwd,
        env=cli_env(ray_address),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run(cmd: list[str], cwd: Path, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    """A command in ``cwd`` with :func:`clean_env`; a failure (``check``) shows the output's tail."""
    proc = subprocess.run(cmd, cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc
