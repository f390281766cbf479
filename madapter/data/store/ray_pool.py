"""The scan and decode stages' work on a Ray cluster (``RAY_ADDRESS`` set): Ray tasks, results in order.

Why: one machine decodes a few hundred videos a minute; Kinetics-400 is 240k videos.  With
``RAY_ADDRESS`` set, :mod:`madapter.data.store.decode` and :mod:`madapter.data.store.scan` hand
their per-video work to Ray tasks (``scheduling_strategy="SPREAD"``: Ray places them over every
node) instead of local worker processes; without it they keep their process pools and never
import Ray (this module imports it only when used: that costs a second).  Ray does the placing;
this module only bounds what is in flight (the cluster's CPUs, read at the start; the stage's
``workers`` key only counts locally, or while a cluster has no CPU yet) and gives results back in
submission order, so the driver writes the same bytes as a local run.

What a cluster must provide: every node reads the videos at the same path as the driver
(``data/raw`` on a shared filesystem, like the frame store; the tasks get absolute paths), and
imports ``madapter`` (the job's runtime env from :func:`madapter.ray_runtime.start_ray` puts the
driver's checkout on ``PYTHONPATH``; the same image or a shared checkout).  Only the driver
writes outputs.

* :func:`ordered_map` -- decode: batches of videos per task (decoded frames come back through
  Ray's object store a batch at a time), at most ``window`` tasks in flight so memory stays
  bounded however many videos there are; Ray retries a task whose node was lost.
* :func:`run_with_timeout` -- scan: one task per video, a streaming generator that reports first
  that it started on its node, so the per-video timeout counts from the start of the probe, not
  from time spent queued or starting a worker.  A task that hangs past the timeout is cancelled
  with ``force=True`` (Ray kills its worker); a task whose worker dies (a segfaulting decoder) is
  reported as crashed; either way only that worker is lost and Ray starts another.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    from madapter.config import Params

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

NODE_LOSS_RETRIES = 3
"""How often a probe whose node died is run again elsewhere (a lost node is not the video's fault)."""


def ray_requested() -> bool:
    """True when ``RAY_ADDRESS`` names a cluster: the data stages then run their work on it."""
    return bool(os.environ.get("RAY_ADDRESS"))


@dataclass
class NodeTally:
    """Which nodes ran how many tasks (thread-safe): the log line that shows the work really spread."""

    tasks: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, node_id: str) -> None:
        with self._lock:
            self.tasks[node_id] += 1

    def summary(self) -> str:
        return f"{sum(self.tasks.values())} task(s) on {len(self.tasks)} node(s)"


@dataclass(frozen=True)
class ClusterInfo:
    """What the connected cluster offers, read once when a stage starts."""

    nodes: int
    cpus: int
    """The cluster's CPUs now (at least 1): how many tasks a stage keeps running at once."""


def connect(params: Params, stage: str, workers: int) -> ClusterInfo:
    """Connect to ``$RAY_ADDRESS`` (:func:`madapter.ray_runtime.start_ray`) and log the cluster's size.

    A cluster with no CPU yet (KubeRay's head advertises none; its workers may be scaled to zero)
    gets ``workers`` (the stage's ``workers`` key) tasks at a time: pending tasks are what makes
    Ray's autoscaler add nodes.
    """
    import ray

    from madapter.ray_runtime import start_ray

    start_ray(params, cpus_needed=1)
    address = os.environ.get("RAY_ADDRESS")
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    cpus = int(ray.cluster_resources().get("CPU", 0))
    if cpus < 1:
        logger.warning("%s on Ray (RAY_ADDRESS=%s): no CPU in the cluster yet; running %d task(s) at a time "
                       "(%s.workers) while it scales up", stage, address, workers, stage)
        return ClusterInfo(nodes, workers)
    logger.info("%s on Ray (RAY_ADDRESS=%s): %d node(s), %d CPU(s)", stage, address, nodes, cpus)
    return ClusterInfo(nodes, cpus)


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


# --------------------------------------------------------------------------------- decode: batches
def _call(fn: Callable[[Any], Any], arg: Any) -> tuple[str, Any]:
    """``fn(arg)`` on whichever node Ray picked; the node id comes back with the result."""
    return _node_id(), fn(arg)


@functools.cache
def _remote_call() -> Any:
    import ray

    return ray.remote(num_cpus=1, scheduling_strategy="SPREAD")(_call)


def ordered_map(fn: Callable[[T], R], items: Iterable[T], window: int, tally: NodeTally) -> Iterator[R]:
    """``fn(item)`` for every item as Ray tasks, results in item order, at most ``window`` in flight.

    ``fn`` must be importable on the workers (a module-level function of ``madapter``).  The next
    task is submitted before a result is handed out, so the cluster keeps working while the
    caller writes; results that finish early wait in the object store (bounded by ``window``).
    """
    import ray

    call = _remote_call()
    source = iter(items)
    pending = deque(call.remote(fn, item) for item in islice(source, max(1, window)))
    try:
        while pending:
            ref = pending.popleft()
            node_id, result = ray.get(ref)
            del ref  # the object store may free the batch as soon as the caller is done with it
            for item in islice(source, 1):
                pending.append(call.remote(fn, item))
            tally.add(node_id)
            yield result
    finally:  # the caller failed or stopped early: the cluster need not finish work nobody will read
        for ref in pending:
            ray.cancel(ref)


# --------------------------------------------------------------------------- scan: one timed task
def _timed_call(fn: Callable[..., Any], args: tuple[Any, ...]) -> Iterator[Any]:
    """Yield the node id as soon as the task runs, then ``fn(*args)``: the driver times only the call."""
    yield _node_id()
    yield fn(*args)


@functools.cache
def _remote_timed_call() -> Any:
    import ray

    return ray.remote(num_cpus=1, num_returns="streaming", max_retries=0, scheduling_strategy="SPREAD")(_timed_call)


Outcome = tuple[Literal["ok"], Any] | tuple[Literal["timeout", "crashed"], str]


def run_with_timeout(fn: Callable[..., R], args: tuple[Any, ...], timeout_s: float, tally: NodeTally) -> Outcome:
    """Run ``fn(*args)`` as one Ray task: ``("ok", result)``, ``("timeout", "")`` or ``("crashed", why)``.

    The timeout starts when the task reports that it runs (queueing and worker start-up are not
    the video's fault); a task still running after ``timeout_s`` is cancelled with ``force=True``.
    Not retried: a video that kills its worker would kill the next one too.  A task whose node
    died runs again (up to :data:`NODE_LOSS_RETRIES` times).
    """
    import ray
    from ray.exceptions import NodeDiedError, OutOfMemoryError, RayTaskError, WorkerCrashedError

    timed_call = _remote_timed_call()
    for attempt in range(NODE_LOSS_RETRIES + 1):
        generator = timed_call.remote(fn, args)
        try:
            tally.add(ray.get(next(generator)))  # blocks while the task waits for a CPU: not timed
            ready, _ = ray.wait([generator], timeout=timeout_s)
            if not ready:
                ray.cancel(generator, force=True)
                return "timeout", ""
            return "ok", ray.get(next(generator))
        except NodeDiedError as err:
            if attempt == NODE_LOSS_RETRIES:
                raise
            logger.warning("a node died under a task (%s); running it again elsewhere", err)
        except (WorkerCrashedError, OutOfMemoryError, RayTaskError) as err:
            return "crashed", f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    raise AssertionError("unreachable")  # the loop returns or raises
