"""A real multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``), and a node that sees
a different filesystem.

The cluster is one head node without CPUs (the driver, the Train controller and nothing else run
there) and two worker nodes of 1 CPU each, so a 2-worker run has to put one worker on each node,
as a real cluster would.  It is built once for the module and reached the way a user reaches a
cluster: ``RAY_ADDRESS``, which :func:`madapter.ray_runtime.start_ray` connects to.

:func:`start_isolated_node` starts one more node whose processes live in their own mount
namespace (``unshare --mount``) with an empty tmpfs mounted over a directory: on that node the
directory is node-local, exactly what a ``train.storage_path`` on a local disk is on a real
cluster.  We are root in the test container; ``unshare`` and ``mount -t tmpfs`` need that.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

# The training tier's session fixtures: the synthetic data (real data stages) and the MLflow server.

BIN = Path(sys.executable).parent
NODE_STORE_BYTES = 100 * 2**20
"""Object store per simulated node: training moves no data through it."""
NODE_WAIT_S = 180.0
"""How long a node may take to join or leave on a busy 2-core machine (normally 2-10 s)."""

logger = logging.getLogger(__name__)


def alive_node_ids() -> set[str]:
    """The node ids the cluster's GCS reports alive (the driver must be connected)."""
    import ray

    return {node["NodeID"] for node in ray.nodes() if node.get("Alive")}


def wait_for(condition, what: str, timeout: float = NODE_WAIT_S, interval: float = 0.2):
    """Poll ``condition()`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")


def _node_being_built(err: BaseException):
    """The ``ray._private.node.Node`` whose ``__init__`` raised ``err`` (from the traceback), if any."""
    from ray._private.node import Node

    tb = err.__traceback__
    while tb is not None:
        candidate = tb.tb_frame.f_locals.get("self")
        if tb.tb_frame.f_code.co_name == "__init__" and isinstance(candidate, Node):
            return candidate
        tb = tb.tb_next
    return None


def add_node(cluster, **node_args):
    """``cluster.add_node`` that survives an overloaded machine.

    Ray gives a new raylet a fixed 30 s to register with the GCS (``raylet_start_wait_time_s`` in
    ``ray/_private/node.py``, not configurable) and raises otherwise, leaving the raylet running.
    On a shared 2-core machine under load that wait is sometimes too short although the node is
    fine, so the node is taken over once it does register (within :data:`NODE_WAIT_S`); a head
    node, whose address nothing knows yet, is stopped and started again instead.
    """
    from ray._private import services

    for attempt in range(3):
        try:
            return cluster.add_node(**node_args)
        except Exception as err:
            node = _node_being_built(err)
            if node is None or "timed out during startup" not in str(err):
                raise
            if cluster.head_node is not None:  # a worker node: wait for it to register, then keep it
                def registered(node=node) -> bool:
                    try:
                        return bool(services.get_node(node.gcs_address, node.node_id))
                    except RuntimeError:
                        return False

                logger.warning("Ray node %s slow to register (attempt %d); waiting for it", node.node_id[:12], attempt)
                wait_for(registered, f"Ray node {node.node_id[:12]} to register", interval=1.0)
                cluster.worker_nodes.add(node)
                return node
            logger.warning("Ray head node timed out during startup (attempt %d); starting it again", attempt)
            node.kill_all_processes(check_alive=False, allow_graceful=True, wait=True)
    pytest.fail("the Ray head node did not start in 3 attempts (machine overloaded?)")


@pytest.fixture(scope="module")
def cluster() -> Iterator:
    """Head (0 CPU) + 2 worker nodes (1 CPU each), ``RAY_ADDRESS`` pointing at it for the module.

    A driver can be connected to one Ray at a time, so another folder's Ray still connected in this
    process is shut down first (each folder's fixtures start their own when they find none).
    """
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        logger.warning("shutting down the Ray this process was connected to: the multinode tier needs its own")
        ray.shutdown()
    started = time.perf_counter()
    cluster = Cluster(initialize_head=False, connect=False)
    add_node(cluster, num_cpus=0, object_store_memory=NODE_STORE_BYTES)  # the head: the driver connects here
    for _ in range(2):
        add_node(cluster, num_cpus=1, object_store_memory=NODE_STORE_BYTES)
    cluster.wait_for_nodes(timeout=NODE_WAIT_S)
    logger.info("3-node Ray cluster up in %.1fs at %s", time.perf_counter() - started, cluster.address)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_ADDRESS", cluster.address)
        try:
            yield cluster
        finally:
            ray.shutdown()
            cluster.shutdown()


def worker_node_ids(cluster) -> set[str]:
    """The node ids of the cluster's worker nodes (the ones with CPUs), as ``cluster_utils`` knows them."""
    return {node.node_id for node in cluster.worker_nodes}


def start_isolated_node(cluster, hidden: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """A node (1 CPU) whose processes see an empty tmpfs at ``hidden``; returns its process and node id.

    ``ray start --block`` runs inside ``unshare --mount --propagation private``, after a tmpfs is
    mounted over ``hidden`` in that namespace only: the raylet and every worker it starts inherit
    the namespace.  The caller must already be connected to the cluster (``ray.nodes()``).  A start
    that fails (Ray's fixed 30 s registration wait, see :func:`add_node`) is stopped and retried.
    """
    before = alive_node_ids()
    script = (f'mount -t tmpfs -o size=16m tmpfs "{hidden}" && '
              f'exec "{BIN / "ray"}" start --address={cluster.address} --num-cpus=1 '
              f'--object-store-memory={NODE_STORE_BYTES} --block')
    for attempt in range(3):
        with log.open("w") as out:
            proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                    env={**os.environ, "RAY_ADDRESS": cluster.address})

        def joined(proc=proc) -> str | bool | None:
            new = alive_node_ids() - before
            if new:
                return next(iter(new))
            return proc.poll() is not None  # True: it gave up (stop it, try again)

        found = wait_for(joined, "the isolated node to join the cluster")
        if isinstance(found, str):
            return proc, found
        logger.warning("isolated node failed to start (attempt %d):\n%s", attempt, log.read_text()[-2000:])
        _kill_group(proc)
    pytest.fail(f"the isolated node did not start in 3 attempts:\n{log.read_text()[-3000:]}")


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM (graceful: a raylet unregisters itself), then SIGKILL, to the process group of ``proc``."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # any raylet worker left in the group
    except ProcessLookupError:
        pass


def stop_isolated_node(proc: subprocess.Popen, node_id: str) -> None:
    """Stop the node started by :func:`start_isolated_node` (its whole process group) and wait until
    the cluster no longer counts it alive, so later runs cannot be placed on it."""
    _kill_group(proc)
    wait_for(lambda: node_id not in alive_node_ids(), "the isolated node to leave the cluster")
