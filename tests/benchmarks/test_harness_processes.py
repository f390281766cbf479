"""``benchmarks.harness.in_processes``: the worker processes never outlive the benchmark that started them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.common.processes import REPO

pytestmark = pytest.mark.integration  # starts processes

STARTER = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C as a terminal's foreground job has it
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
from benchmarks.harness import in_processes
from tests.benchmarks.test_harness_processes import no_setup, report_pid_and_sleep
jobs = [(sys.argv[1], k) for k in range(4)]  # 4 jobs, 2 workers: two are still queued
for _ in in_processes(report_pid_and_sleep, jobs, 2, initializer=no_setup):
    pass
"""
"""The benchmark: four jobs on two workers.  Its Ctrl-C is set up explicitly: a process inherits an
*ignored* or *blocked* SIGINT through exec (Python then keeps it ignored, as in a shell's background
job), so the test would depend on what earlier tests left in this pytest process (the suite's own
guard is ``_sigint_as_found`` in tests/common/fixtures.py)."""


def no_setup() -> None:
    """A worker initializer that skips importing torch (the harness' default)."""


def report_pid_and_sleep(folder: str, job: int) -> int:
    """A job: write this worker's pid, then run far longer than the test waits."""
    (Path(folder) / f"{os.getpid()}.{job}").touch()
    time.sleep(120)
    return job


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")  # a zombie is gone


def _workers(folder: Path, parent: subprocess.Popen) -> set[int]:
    deadline = time.monotonic() + 120  # two spawned interpreters import torch on a busy machine
    while time.monotonic() < deadline:
        pids = {int(p.name.split(".")[0]) for p in folder.iterdir()}
        if len(pids) == 2:
            return pids
        assert parent.poll() is None, parent.communicate()[1][-2000:]
        time.sleep(0.2)
    raise AssertionError(f"the two workers never started their jobs: {sorted(folder.iterdir())}")


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGINT])
def test_killing_the_benchmark_ends_its_workers_and_starts_no_queued_job(tmp_path: Path, how: signal.Signals) -> None:
    """SIGKILL leaves the parent no chance to clean up (the kernel's parent-death signal ends the
    workers); SIGINT to the parent alone (not its process group) must not wait for the queued jobs."""
    parent = subprocess.Popen([sys.executable, "-c", STARTER, str(tmp_path)], cwd=REPO, stderr=subprocess.PIPE,
                              text=True, start_new_session=True)
    try:
        workers = _workers(tmp_path, parent)
        parent.send_signal(how)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 15
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in workers if _alive(pid)], "a worker outlived its benchmark"
        assert len(list(tmp_path.iterdir())) == 2  # the queued jobs never started
    finally:
        os.killpg(parent.pid, signal.SIGKILL) if parent.poll() is None else None
