"""The Prefect API that local runs (``make demo``, ``make serve``) report to, started and stopped here.

With no ``PREFECT_API_URL``, Prefect starts a temporary ("ephemeral") API server as a child
process in the caller's process group.  A Ctrl-C in the terminal then kills that server together
with the flow, and the flow engine, which still has to record the interrupted run and flush its
logs and events, retries against the dead server and never exits.  :func:`local_prefect_api`
starts the same server (Prefect's own app and database, under ``PREFECT_HOME``) in its own
process group instead, drains Prefect's log and event workers while it is still up, and stops it
last: ``finally`` runs on Ctrl-C, SIGTERM and SIGHUP alike once the caller turns those into
``KeyboardInterrupt`` (as :mod:`pipelines.demo` does).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import prefect
from prefect.context import refresh_global_settings_context
from prefect.events.worker import EventsWorker
from prefect.logging.handlers import APILogWorker
from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import PREFECT_API_URL, get_current_settings

logger = logging.getLogger(__name__)

SERVER_STARTUP_TIMEOUT_S = 120
"""The server migrates its SQLite database when it starts: slow on a busy 2-core machine."""
DRAIN_TIMEOUT_S = 10.0
"""Longest wait for Prefect's log and event workers to deliver what the flow left in their queues."""


class OwnGroupPrefectServer(SubprocessASGIServer):
    """Prefect's ``SubprocessASGIServer`` (what Prefect starts when no API URL is set), except that
    the uvicorn process gets its own process group, out of reach of the terminal's Ctrl-C."""

    def _run_uvicorn_command(self) -> subprocess.Popen:
        # The command and environment of prefect 3.8.8's SubprocessASGIServer._run_uvicorn_command,
        # plus process_group=0 (and no terminal stdin for a background process group).
        server_env = {
            "PREFECT_UI_ENABLED": "0",
            "PREFECT__SERVER_EPHEMERAL": "1",
            "PREFECT__SERVER_FINAL": "1",
        }
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                str(prefect.__module_path__.parent),
                "--factory",
                "prefect.server.api.server:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ],
            env={
                **os.environ,
                **server_env,
                **get_current_settings().to_environment_variables(exclude_unset=True),
            },
            stdin=subprocess.DEVNULL,
            process_group=0,
        )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _use_api_url(url: str | None) -> None:
    """Point this whole process (every thread, Prefect's background workers) at ``url``."""
    if url is None:
        os.environ.pop("PREFECT_API_URL", None)
    else:
        os.environ["PREFECT_API_URL"] = url
    refresh_global_settings_context()


def drain_prefect_workers(timeout_s: float = DRAIN_TIMEOUT_S) -> None:
    """Deliver queued flow logs and events now, while the server is up (Prefect's test harness
    does the same); at interpreter exit these workers would retry against a stopped server."""
    for worker in (APILogWorker, EventsWorker):
        _, pending = worker.drain_all(timeout=timeout_s, at_exit=False)
        if pending:
            logger.warning("Prefect %s: queued items not delivered within %.0fs", worker.__name__, timeout_s)


@contextmanager
def local_prefect_api() -> Iterator[str]:
    """Yield the API URL to run flows against: ``PREFECT_API_URL`` if set, else a local server we own.

    The local server is Prefect's temporary one (same app, same database under PREFECT_HOME, so
    ``prefect server start`` shows the runs afterwards) in its own process group; it is stopped
    when the block ends, however it ends.
    """
    configured = PREFECT_API_URL.value()
    if configured:
        yield configured
        return
    server = OwnGroupPrefectServer(port=_free_port())
    try:
        server.start(timeout=SERVER_STARTUP_TIMEOUT_S)
        _use_api_url(server.api_url)
        yield server.api_url
    finally:
        try:
            if server.running:
                drain_prefect_workers()
        finally:
            server.stop()
            _use_api_url(None)
