"""Session fixtures shared by several test folders, defined ONCE, here.

Why here and not imported into each folder's conftest: a fixture imported into several conftest
files (``from tests.train.conftest import mlflow_server``) is a separate fixture in each, so a
"session" server or data set was built once per folder: five ``mlflow server`` processes (each with
its job runners, ~2 GB) in one run, enough for Ray's memory monitor to kill training workers when
two suites shared a machine.  Fixtures defined here are visible to every test, one instance each.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.common.synthetic_data import build_synthetic_data
from tests.train.conftest import BIN, free_port, make_params, stop, wait_http


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic set through the REAL data stages (mp4 files, decord scan and decode)."""
    root = tmp_path_factory.mktemp("train-data")
    return build_synthetic_data(make_params(root / "data", root / "unused"))


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
    # No job runners: mlflow 3.x starts ~8 huey worker processes (~250 MB each) per server for
    # features madapter never uses.
    env = {**os.environ, "MLFLOW_TRACKING_URI": "", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{uri}/health", proc, timeout=90, log=log)
        yield uri
    finally:
        stop(proc)
