"""The compose stack's Prefect server for real: ``prefect server start`` on PostgreSQL (asyncpg) with an
API auth string, and a tiny flow run against it by a separate process configured only through the
environment.  Without the auth string the API answers 401."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.common.processes import BIN, REPO, free_port, wait_http
from tests.infra.postgres import PgServer

pytestmark = pytest.mark.integration
FLOW_SCRIPT = Path(__file__).with_name("prefect_flow.py")


@dataclass(frozen=True)
class PrefectServer:
    api_url: str
    auth_string: str


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's own process group (it was started in a new session), SIGKILL if it hangs."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.fixture(scope="module")
def prefect_server(pg: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    root = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    auth = "madapter:" + os.urandom(12).hex()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({
        "PATH": os.pathsep.join([str(BIN), env.get("PATH", "")]),
        "PREFECT_HOME": str(root / "home"),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": pg.url("prefect", driver="postgresql+asyncpg"),
        "PREFECT_SERVER_API_AUTH_STRING": auth,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_UI_ENABLED": "false",
    })
    log = root / "server.log"
    with log.open("w") as out:
        proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=root,
                                start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"
    try:
        wait_http(f"{api}/health", proc, timeout=240, log=log)  # /api/health is open (probes); the rest is not
        yield PrefectServer(api, auth)
    finally:
        _stop_group(proc)


def _basic(auth: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()}


def test_prefect_api_refuses_requests_without_the_auth_string(prefect_server: PrefectServer) -> None:
    url = f"{prefect_server.api_url}/flows/filter"
    assert requests.post(url, json={}, timeout=30).status_code == 401
    assert requests.post(url, json={}, headers=_basic("madapter:wrong"), timeout=30).status_code == 401
    assert requests.post(url, json={}, headers=_basic(prefect_server.auth_string), timeout=30).status_code == 200


def test_flow_runs_against_prefect_on_postgres(prefect_server: PrefectServer, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update({"PREFECT_API_URL": prefect_server.api_url, "PREFECT_API_AUTH_STRING": prefect_server.auth_string,
                "PREFECT_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)})
    done = subprocess.run([sys.executable, str(FLOW_SCRIPT)], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    reported = json.loads(done.stdout.strip().splitlines()[-1])
    assert reported["state"] == "COMPLETED" and reported["result"] == 9
    # the server (and so PostgreSQL) has the run and its two task runs
    headers = _basic(prefect_server.auth_string)
    run = requests.get(f"{prefect_server.api_url}/flow_runs/{reported['flow_run_id']}", headers=headers, timeout=30)
    assert run.status_code == 200 and run.json()["state_type"] == "COMPLETED"
    tasks = requests.post(f"{prefect_server.api_url}/task_runs/filter", headers=headers, timeout=30,
                          json={"flow_runs": {"id": {"any_": [reported["flow_run_id"]]}}})
    assert tasks.status_code == 200 and sorted(t["state_type"] for t in tasks.json()) == ["COMPLETED", "COMPLETED"]
