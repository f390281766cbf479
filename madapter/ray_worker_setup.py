"""What every Ray worker process of our jobs does first (Ray's ``worker_process_setup_hook``,
:func:`setup_worker_process`, named in the job's runtime env by :mod:`madapter.ray_runtime`): log
filters, and one fix to Ray Train's placement-group cleaner.

Why a filter exists at all (Ray 2.60, ``ray.train.v2``): every ``TorchTrainer.fit`` starts a
detached ``PlacementGroupCleaner`` actor that asks the Ray *State API* once a second whether
the Train controller is still alive (``placement_group_cleaner.py``, ``check_interval_s=1.0``,
not configurable).  The State API is served by the dashboard's ``StateHead`` module.  Our local
Ray runs without a dashboard: ``ray[train]`` does not install the dashboard's dependencies
(``aiohttp_cors``, ``opencensus``, ...), so Ray starts its API server in ``--minimal`` mode
with no HTTP server, and every query fails with ``ServerUnavailable``.  The cleaner then logs
"Failed to query Ray Train Controller actor state ... Continuing to monitor." each second for the
whole run, which Ray forwards to the driver's terminal: dozens of lines per training run.  It is
not the controller being starved of CPU: the query fails at once (~10 ms, no timeout involved).

Fixing the cause would mean installing ``ray[default]`` and running the full dashboard (several
extra processes) next to training on every machine, only so that a safety net can poll.  That
safety net protects nothing here anyway: with the State API absent the cleaner can never see
the controller die, and a local Ray's placement groups go away with the driver (a long-lived
driver that stops Train runs itself, the Tune sweep, aborts them explicitly:
:mod:`madapter.tune.stopping`).  On a cluster
started with the dashboard (``ray start --head``, KubeRay) the queries succeed and the message
does not occur.  (Unless ANOTHER Ray on the machine serves a State API: then the cleaner asks it, and
Ray reads its "not found" as a dead controller; :class:`CleanerLivenessFix` makes that safe.)  So this
one message, and nothing else, is dropped at its source: a
``logging.Filter`` on the cleaner's logger, installed in every Ray worker process by Ray's
documented ``worker_process_setup_hook``.  The cleaner's other warnings (e.g. that it is
cleaning up after a dead controller), Ray's own warnings and the per-epoch lines are untouched.

The same hook keeps Ray Train's per-epoch "Reporting training result" line at WARNING
(:func:`quiet_train_reports`; Ray Train's other INFO lines are off the console through its own
``LoggingConfig``, :data:`TRAIN_LOG_LEVEL`): each was forwarded to the driver's terminal with a
``(RayTrainWorker pid=...)`` prefix.  Ray's session logs (``logs/train/``) keep the ``ray.train``
lines; the report line is dropped (its metrics are the epoch's history record, in MLflow).
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import sys
from pathlib import Path

CLEANER_MODULE = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
CLEANER_LOGGER = CLEANER_MODULE
CLEANER_RETRY_MESSAGE = "Failed to query Ray Train Controller actor state"


class DropCleanerRetries(logging.Filter):
    """Drop the PlacementGroupCleaner's per-second State-API retry warning (see module docstring)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(CLEANER_RETRY_MESSAGE)


def setup_worker_process() -> None:
    """Ray's ``worker_process_setup_hook``: install :class:`DropCleanerRetries` once per process, keep
    Ray Train's per-report INFO line off the console (:func:`quiet_train_reports`) and make the
    cleaner's liveness check safe (:class:`CleanerLivenessFix`)."""
    cleaner_logger = logging.getLogger(CLEANER_LOGGER)
    if not any(isinstance(f, DropCleanerRetries) for f in cleaner_logger.filters):
        cleaner_logger.addFilter(DropCleanerRetries())
    quiet_train_reports()
    if not any(isinstance(f, CleanerLivenessFix) for f in sys.meta_path):
        sys.meta_path.insert(0, CleanerLivenessFix())


def controller_is_alive(actor_id: str, timeout: int) -> bool:
    """Only a controller the State API reports DEAD is dead; "not found" is not an answer about it.

    The query names this process's own cluster (its GCS address).  Left to auto-detection, the State API
    client reads ``/tmp/ray/ray_current_cluster``, which names the cluster a ``ray start`` on this
    machine last started, dead or alive: with a stale one every check blocked for 40 s ("Timed out while
    waiting for GCS to become available"), so the cleaner could not stop within its 12 s and every Train
    run's shutdown waited those 12 s and printed a ``GetTimeoutError`` traceback.
    """
    import ray
    from ray.util.state import get_actor

    state = get_actor(actor_id, address=ray.get_runtime_context().gcs_address, timeout=timeout)
    return state is None or state.state != "DEAD"


class CleanerLivenessFix(importlib.abc.MetaPathFinder):
    """Ray 2.60's ``PlacementGroupCleaner`` removes a LIVE training run's placement group (its workers die:
    "Destroying worker since its placement group was removed") when the State API does not find the
    controller: ``is_actor_alive`` reads a missing actor as dead.

    Why it does not find it: a dashboard-less Ray has no State API of its own, and the client falls back
    to 127.0.0.1:8265.  With ``ray[serve]`` installed the dashboard's dependencies are there, so another
    Ray on the machine (a ``ray start``, a test cluster) may serve a State API there, and the cleaner asks
    it about a controller it has never heard of (seen: a fresh-clone ``make test`` lost a training run).
    And left to auto-detection, the client first looks for the cluster a ``ray start`` last named in
    ``/tmp/ray/ray_current_cluster``; when that one is gone, each check blocked 40 s.  Here the
    cleaner's check, once its module is imported in this process (nothing is imported before), becomes
    :func:`controller_is_alive`: it asks this process's own cluster, and only DEAD is dead; a controller
    that really died is still reported DEAD by a State API that serves its cluster, and cleaned up after.
    ``tests/train/test_cleaner_liveness.py`` reproduces both.
    """

    def find_spec(self, fullname: str, path: object = None, target: object = None):
        if fullname != CLEANER_MODULE:
            return None
        sys.meta_path.remove(self)  # the real finders locate it; this finder only patches once
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module) -> None:
            load(module)
            module.is_actor_alive = controller_is_alive

        spec.loader.exec_module = exec_module
        return spec


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
"""The format of ``madapter``'s lines in a Ray worker: the CLI's (:mod:`madapter.cli`)."""


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record comes (Ray redirects a worker's streams)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.setStream(sys.stderr)
        super().emit(record)


def tag_package_lines() -> None:
    """Give ``madapter``'s lines in a Ray Train worker their level and logger name, as in the driver.

    Ray Train's worker logging prints a record's message alone, so a worker's warning reached the
    driver as ``(RayTrainWorker pid=...) <message>``, indistinguishable from its INFO lines: the
    terminal (:mod:`pipelines.console`), which shows warnings, could not tell.  The ``madapter``
    logger gets its own stderr handler in the CLI's format and no longer propagates; its level is
    left as it is, so a worker shows the same lines as before, tagged.  Called by the worker loop
    (:mod:`madapter.train.loop`) once Ray Train has configured the worker's logging, never in a
    driver or a test process, whose handlers (pytest's ``caplog``) are on the root logger.
    """
    package_logger = logging.getLogger("madapter")
    if any(isinstance(handler, _StderrHandler) for handler in package_logger.handlers):
        return
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT, datefmt="%H:%M:%S"))
    package_logger.addHandler(handler)
    package_logger.propagate = False


TRAIN_LOG_LEVEL = "WARNING"
"""Ray Train's own console level (``RunConfig(logging_config=LoggingConfig(...))``, :mod:`madapter.train.driver`).

At INFO each epoch printed "Checkpoint successfully created at ...", and each run "Setting up process
group", "Moving model to device", ...: Ray's bookkeeping, repeated on the terminal with a
``(RayTrainWorker pid=...)`` prefix.  Ray Train's system log files (``logs/train/`` of the Ray
session) keep every level; warnings and errors still reach the terminal."""


def quiet_train_reports() -> None:
    """Ray Train's "Reporting training result <n>: ..." (one per epoch) at :data:`TRAIN_LOG_LEVEL`.

    Its logger is named after its file (``logging.getLogger(__file__)`` in Ray 2.60's
    ``ray/train/v2/_internal/execution/context.py``), not ``ray.train.*``, so ``LoggingConfig``'s
    level does not reach it.  Only the logger's level is set: the module is not imported here, and
    a Ray Data or task worker that never trains pays nothing.
    """
    import ray

    report_logger = Path(ray.__file__).parent / "train" / "v2" / "_internal" / "execution" / "context.py"
    logging.getLogger(str(report_logger)).setLevel(TRAIN_LOG_LEVEL)
