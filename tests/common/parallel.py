"""How ``make test`` runs on two pytest-xdist workers without building anything twice or changing a test.

``make test`` is ``pytest -n 2 --dist loadgroup``.  Measured on the 2-core machine, one serial run
left a core idle about a third of the time: the integration scenarios wait on Ray placement,
servers starting, subprocess pipelines and polling.  Two workers fill that, as long as:

* **a module stays on one worker** (its module fixtures -- a trained model, a 4-trial sweep, the
  real-material pipeline -- are built once): the unit of work is the module, not the test, as with
  ``--dist loadscope``;
* **the modules that reuse one expensive session fixture share a worker**: every module that uses
  a fixture of :data:`UNIT_OF_SHARED_FIXTURE` goes into one unit named after it (the finished
  pipeline, the trained model); likewise the modules that start a multi-node Ray cluster (one at a
  time on the machine, as in a serial run);
* **the long scenarios start first**: units are handed out in collection order, and
  :func:`pytest_collection_modifyitems` puts integration modules before unit modules (stable
  otherwise), so the many short unit tests fill in at the end instead of a 3-minute scenario
  starting last on one worker while the other is idle.

Run serially (no ``-n``), nothing here changes anything but the order: integration first.

And one guard (:class:`OrphanedChannelWatch`): a worker that dies while a process it forked lives on
ends in a crash report, not in a controller that waits forever.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

UNIT_OF_SHARED_FIXTURE: dict[str, str] = {
    "finished_pipeline": "finished_pipeline",
    "harness": "finished_pipeline",
    "trained": "trained",
    "reference": "trained",
    "cluster": "ray-clusters",
    "two_node_ray": "ray-clusters",
    "credential_free_ray": "ray-clusters",
}
"""Fixtures whose users run on one worker: a module that uses one joins that fixture's unit (the
first fixture listed here that the module uses decides).

``finished_pipeline`` (a minute of Prefect + DVC + Ray Train, its flow-run state in that worker's
Prefect API) and ``trained`` (features + a 2-worker run) are session fixtures, built once per
worker: all their users belong together.  The other users of Prefect's test API (``harness``, which
the finished pipeline starts) join the finished pipeline's unit: a second worker would start a
second Prefect server for a few seconds of tests.  Likewise the users of ``reference`` (the
uninterrupted run on frames) join the trained model's unit.  The cluster fixtures (tests/multinode,
tests/data_video, tests/infra) each start a multi-node Ray on this machine: one at a time, as in a
serial run."""


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Integration modules first (a stable sort); every test of a module that uses a shared fixture
    gets that fixture's unit (the whole module: its module fixtures are then built once).

    ``tryfirst``: xdist's worker turns ``xdist_group`` marks into node-id suffixes in its own
    hook of the same name, which must see the marks added here.
    """
    items.sort(key=lambda item: item.get_closest_marker("integration") is None)
    units: dict[str, str] = {}
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        used = [name for name in UNIT_OF_SHARED_FIXTURE if name in getattr(item, "fixturenames", ())]
        if used and module not in units:
            units[module] = UNIT_OF_SHARED_FIXTURE[used[0]]
    for item in items:
        if (unit := units.get(item.nodeid.split("::", 1)[0])) is not None:
            item.add_marker(pytest.mark.xdist_group(unit))


def unit_of(nodeid: str) -> str:
    """The unit of work a test belongs to: its shared fixture's group, which xdist appends to the
    node id as ``@group`` (a ``@`` inside a parametrize id, before the ``]``, is not one), else its module."""
    if nodeid.rfind("@") > nodeid.rfind("]"):
        return nodeid.rsplit("@", 1)[-1]
    return nodeid.split("::", 1)[0]


def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(_XdistController(), "madapter-xdist-controller")


def pipe_holders(inode: int) -> list[tuple[int, str]]:
    """(pid, command line) of every other process with an end of the pipe ``inode`` open (Linux /proc)."""
    link, holders = f"pipe:[{inode}]", []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        pid = int(fd_dir.parent.name)
        try:
            if pid != os.getpid() and any(os.readlink(fd) == link for fd in fd_dir.iterdir()):
                cmdline = (fd_dir.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                holders.append((pid, cmdline.strip()[:160]))
        except OSError:  # the process ended while we looked, or is not ours to read
            continue
    return holders


class OrphanedChannelWatch:
    """Ends the wait on a dead worker whose channel a leftover process keeps open.

    The controller learns that a worker died from the end of the worker's stdout pipe.  A process
    the worker *forked* (a ``multiprocessing`` Manager, a fork-started pool) holds a copy of that
    pipe; when the worker dies before it, the pipe never ends, and ``make test`` hung for an hour
    once (a worker exited with status 1 inside a test that had started a Manager).  This thread
    waits for the worker process to end, gives a normal exit :data:`GRACE_S` to close the pipe, and
    otherwise kills the processes still holding it, with one line naming them: the controller then
    reports the crashed test as xdist does for any worker crash.
    """

    POLL_S = 2.0
    GRACE_S = 10.0

    def __init__(self, gateway) -> None:
        self.name = gateway.id
        self.popen = gateway._io.popen  # execnet's Popen2IOMaster: the worker process
        self.inode = os.fstat(self.popen.stdout.fileno()).st_ino
        threading.Thread(target=self._watch, name=f"orphaned-channel-watch-{self.name}", daemon=True).start()

    def _watch(self) -> None:
        while self.popen.poll() is None:
            time.sleep(self.POLL_S)
        time.sleep(self.GRACE_S)
        holders = pipe_holders(self.inode)
        if not holders:
            return
        names = "; ".join(f"{pid} ({cmd})" for pid, cmd in holders)
        sys.stderr.write(f"\npytest-xdist worker {self.name} exited with status {self.popen.returncode} while "
                         f"{len(holders)} process(es) it had forked kept its channel open; killing them: {names}\n")
        sys.stderr.flush()
        for pid, _ in holders:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


class _XdistController:
    """The controller's xdist hooks, registered only when xdist is installed (its import is optional)."""

    def pytest_xdist_newgateway(self, gateway) -> None:
        if hasattr(gateway._io, "popen") and Path("/proc/self/fd").is_dir():
            OrphanedChannelWatch(gateway)

    @pytest.hookimpl(tryfirst=True)
    def pytest_xdist_make_scheduler(self, config: pytest.Config, log):
        if config.getvalue("dist") != "loadgroup":
            return None
        from xdist.scheduler import LoadGroupScheduling

        class ModuleOrGroupScheduling(LoadGroupScheduling):
            def _split_scope(self, nodeid: str) -> str:
                return unit_of(nodeid)

        config.option.loadscopereorder = False  # keep the order made above: long scenarios first
        return ModuleOrGroupScheduling(config, log)
