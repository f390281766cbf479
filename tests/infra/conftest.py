"""Fixtures for the scale-stack tests: one real PostgreSQL, the compose stack's MLflow server on it (the
basic-auth app), and a Ray "cluster" the pipeline connects to by ``RAY_ADDRESS`` (the data is the session's
``data_dir``).

Everything expensive is built once for the folder (package scope: the servers and the Ray cluster stop
before the next folder's tests start) and shared: one PostgreSQL (initialised with the real
``infra/postgres-init.sql``) holds the MLflow server's tracking store and auth database, and the
Prefect server's database, as the compose stack's one PostgreSQL does.  The stack runs MLflow only
with its basic-auth app, so that is the server tested; a PostgreSQL store without the app is the same
store behind a server that asks no login, and costs one more server start and training run to show.

Why the Ray cluster is started here (``ray.cluster_utils.Cluster``) instead of a local ``ray.init``:
on a local Ray the workers inherit the driver's whole environment, so MLflow credentials would
reach them whether or not the pipeline passes them on.  The cluster's head is started BEFORE any
test puts credentials into the environment, so, as on a real cluster, its raylet and every worker
process it forks lack them; the train stage connects with ``RAY_ADDRESS`` exactly as on a cluster,
and its workers can only log in with what the job's runtime env carries.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.common.processes import BIN, REPO, free_port, stop, wait_http
from tests.infra.postgres import PgServer, start_postgres, stop_postgres

INFRA = REPO / "infra"
CREDENTIAL_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN",
                   "PREFECT_API_AUTH_STRING", "PREFECT_API_KEY")


@pytest.fixture(autouse=True)
def _no_ambient_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests set credentials themselves; a developer's own must not leak into (or mask) them."""
    for name in CREDENTIAL_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="package")
def pg() -> Iterator[PgServer]:
    """A real PostgreSQL on 127.0.0.1 with the databases of ``infra/postgres-init.sql``."""
    server = start_postgres(free_port(), password=secrets.token_hex(16))
    try:
        server.psql("-f", str(INFRA / "postgres-init.sql"))
        yield server
    finally:
        stop_postgres(server)


@dataclass(frozen=True)
class MlflowServer:
    """A running ``mlflow server``: its URI and, with basic auth, the admin login."""

    uri: str
    username: str | None = None
    password: str | None = None


def _launch(cmd: list[str], env: dict[str, str], root: Path) -> tuple[subprocess.Popen, Path]:
    log = root / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root)
    return proc, log


def _server_env(**extra: str) -> dict[str, str]:
    """The server's environment: ours minus any tracking settings, our venv's ``bin`` first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_") and k not in CREDENTIAL_VARS}
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    # MLflow's server-side job runner (GenAI evaluation, online scoring: ~8 huey processes per server)
    # serves nothing madapter does; on a shared 2-core machine it only competes with the tests.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    env.update(extra)
    return env


@pytest.fixture(scope="package")
def mlflow_auth(pg: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """MLflow on PostgreSQL with the basic-auth app, as ``infra/docker-compose.yml`` runs it: the compose
    stack's command, ``infra/mlflow-server.sh``, with the tracking store (``mlflow``) and the auth
    database (``mlflow_auth``) on PostgreSQL, the admin login from the environment and a local artifact
    destination served through the server."""
    root = tmp_path_factory.mktemp("mlflow-auth")
    port = free_port()
    username, password = "madapter-admin", secrets.token_hex(12)
    cmd = ["sh", str(INFRA / "mlflow-server.sh"), "--artifacts-destination", str(root / "artifacts"),
           "--serve-artifacts", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = _server_env(
        MLFLOW_BACKEND_STORE_URI=pg.url("mlflow"),
        MLFLOW_AUTH_DATABASE_URI=pg.url("mlflow_auth"),
        MLFLOW_AUTH_ADMIN_USERNAME=username,
        MLFLOW_AUTH_ADMIN_PASSWORD=password,
        MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16),
        TMPDIR=str(root),
    )
    proc, log = _launch(cmd, env, root)
    try:
        wait_http(f"http://127.0.0.1:{port}/health", proc, timeout=240, log=log)  # /health needs no login
        yield MlflowServer(f"http://127.0.0.1:{port}", username, password)
    finally:
        stop(proc)


@pytest.fixture(scope="package")
def credential_free_ray() -> Iterator[str]:
    """A one-node Ray cluster started from a credential-free environment; yields its address.

    The driver is not connected: the train stage connects itself through ``RAY_ADDRESS``.
    """
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():  # a Ray left over from another folder would be used instead of ours
        ray.shutdown()
    # Cluster records its address in <RAY_TMPDIR>/ray/ray_current_cluster, where any plain
    # ray.init() on this machine (other test processes included) would find and join it: keep it private.
    private_tmp = tempfile.mkdtemp(prefix="mray-", dir="/tmp")  # short: Ray's socket paths have a length limit
    try:
        with _environ(RAY_TMPDIR=private_tmp, **{name: None for name in CREDENTIAL_VARS}):
            cluster = Cluster(initialize_head=True, head_node_args={
                "num_cpus": 2, "object_store_memory": 200 * 2**20, "include_dashboard": False})
    except BaseException:
        shutil.rmtree(private_tmp, ignore_errors=True)  # the half-started node's processes die at exit
        raise
    try:
        yield cluster.address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        with _environ(RAY_TMPDIR=private_tmp):
            cluster.shutdown()
        shutil.rmtree(private_tmp, ignore_errors=True)


@contextlib.contextmanager
def _environ(**values: str | None) -> Iterator[None]:
    """Set (or, for None, remove) environment variables for a block, then restore them."""
    saved = {name: os.environ.get(name) for name in values}
    try:
        for name, value in values.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


