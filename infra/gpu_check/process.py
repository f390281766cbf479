"""Subprocesses of the check (a log file each, a hang guard, the whole process group stopped) and the
throw-away copy of this checkout the pipeline runs in."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

from infra.gpu_check.common import BIN, REPO, TOP_LEVEL_SKIP, CheckFailed, logger


def child_env(**extra: str) -> dict[str, str]:
    """This venv's bin first on PATH (dvc.yaml runs ``python``; mlflow serve runs ``uvicorn``)."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    env.update({"DVC_NO_ANALYTICS": "1", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1", **extra})
    return env


def stop_group(proc: subprocess.Popen) -> None:
    """End a child started in its own session and everything it started (Ray, uvicorn workers)."""
    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def run_logged(cmd: list[str], cwd: Path, log: Path, timeout: float, env: dict[str, str] | None = None) -> str:
    """Run ``cmd`` with its output in ``log``; return the output; raise CheckFailed on failure or timeout."""
    logger.info("running %s (log: %s)", " ".join(cmd[1:] if cmd[0] == sys.executable else cmd), log)
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env or child_env(), stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise CheckFailed(f"timed out after {timeout:.0f} s (last line: {last_line(log)}; log: {log})") from None
        finally:
            stop_group(proc)
    if code != 0:
        raise CheckFailed(f"exit {code}: {last_line(log)} (log: {log})")
    return log.read_text()


def last_line(log: Path) -> str:
    """The most telling line of a log: the last error line if there is one, else the last line."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    for line in reversed(lines):  # DVC's/our CLI's error line, or a Python exception's (ConfigError: ...)
        if re.search(r"^(ERROR|error|FAIL)\b|^[\w.]*Error: ", line):
            return line[:300]
    return lines[-1][:300] if lines else "no output"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _copy_ignore(directory: str, names: list[str]) -> set[str]:
    skipped = {n for n in names if n in {"__pycache__"} or n.endswith((".pyc", ".egg-info"))}
    here = Path(directory).resolve()
    if here == REPO:
        skipped |= TOP_LEVEL_SKIP & set(names)
    elif here == REPO / ".dvc":
        skipped |= {"cache", "tmp", "config.local"} & set(names)
    elif here == REPO / "benchmarks":
        skipped |= {"results"} & set(names)
    return skipped


def copy_repo(dst: Path) -> Path:
    """This checkout's working tree (uncommitted edits included) as a fresh git repository."""
    shutil.copytree(REPO, dst, ignore=_copy_ignore)
    git = ["git", "-c", "user.email=gpu-check@madapter.local", "-c", "user.name=madapter gpu-check"]
    for cmd in (["git", "init", "-q"], [*git, "add", "-A"], [*git, "commit", "-q", "-m", "gpu-check copy"]):
        subprocess.run(cmd, cwd=dst, check=True, capture_output=True)
    return dst
