"""How Ray is started (:func:`start_ray`, shared by the train and features stages), the job's runtime
environment (with the MLflow/Prefect credentials a cluster's workers need) and a worker log filter.

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
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from madapter.config import Params

CLEANER_MODULE = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
CLEANER_LOGGER = CLEANER_MODULE
CLEANER_RETRY_MESSAGE = "Failed to query Ray Train Controller actor state"
SETUP_HOOK = f"{__name__}.setup_worker_process"
"""Import path Ray calls in every worker process it starts (``worker_process_setup_hook``)."""

CREDENTIAL_ENV_VARS: tuple[str, ...] = (
    "MLFLOW_TRACKING_USERNAME",
    "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
    "PREFECT_API_AUTH_STRING",
    "PREFECT_API_KEY",
)
"""Credentials the driver hands on to every Ray worker, when set in the driver's environment.

Rank 0 of a Train run logs metrics and checkpoints to the MLflow server itself, so on a server with
basic auth (``mlflow server --app-name basic-auth``, what ``infra/`` runs) a worker without these
gets 401 on its first request.  On a local Ray the workers would inherit the driver's environment
anyway; on a cluster (``RAY_ADDRESS``) the worker processes are children of the nodes' raylets,
started long before this job with none of the driver's variables, so the job's runtime env is the
only way in.  Values are never logged.  They are readable by anyone who can see the job's runtime
env (Ray dashboard, ``ray list jobs``): another reason the dashboard (8265), GCS (6379) and client
(10001) ports must never face an untrusted network (docs/operations.md, "Running on the scale
stack")."""


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
    """Only a controller the State API reports DEAD is dead; "not found" is not an answer about it."""
    from ray.util.state import get_actor

    state = get_actor(actor_id, timeout=timeout)
    return state is None or state.state != "DEAD"


class CleanerLivenessFix(importlib.abc.MetaPathFinder):
    """Ray 2.60's ``PlacementGroupCleaner`` removes a LIVE training run's placement group (its workers die:
    "Destroying worker since its placement group was removed") when the State API does not find the
    controller: ``is_actor_alive`` reads a missing actor as dead.

    Why it does not find it: a worker resolves the State API by auto-detection, which picks the Ray
    instance started LAST on the machine.  With ``ray[serve]`` installed the dashboard's dependencies
    are there, so another Ray on the machine (a ``ray start``, a test cluster) serves a State API on
    8265, and a dashboard-less Ray's cleaner asks it about a controller it has never heard of (seen:
    a fresh-clone ``make test`` lost a training run; ``tests/train/test_cleaner_liveness.py`` reproduces
    it).  Here the cleaner's check, once its module is imported in this process (nothing is imported
    before), becomes :func:`controller_is_alive`; a controller that really died is still reported DEAD
    by its own cluster's State API, and cleaned up after.
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


AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
AUTH_DEFAULT_MESSAGE = "Token authentication is enabled for this Ray cluster"


class DropAuthDefaultNotice(logging.Filter):
    """Drop Ray's notice that a new local cluster got token authentication by default."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(AUTH_DEFAULT_MESSAGE)


def quiet_auth_default() -> None:
    """Ray 2.60 turns token authentication on for every new local cluster and says so as a WARNING
    each time: a line on the terminal per stage that starts Ray, about a default that protects the
    cluster and that we keep.  Only that notice is dropped (a filter on its logger); the warning that
    a cluster runs WITHOUT authentication stays.  Setting ``RAY_AUTH_MODE=token`` ourselves instead
    is not equivalent: Ray reads its config when imported, and a GCS started in token mode then
    refused the driver's connection."""
    auth_logger = logging.getLogger(AUTH_LOGGER)
    if not any(isinstance(f, DropAuthDefaultNotice) for f in auth_logger.filters):
        auth_logger.addFilter(DropAuthDefaultNotice())


def package_root() -> Path:
    """The directory that holds the ``madapter`` package (put on the workers' ``PYTHONPATH``)."""
    return Path(__file__).resolve().parent.parent


def worker_runtime_env() -> dict[str, Any]:
    """The Ray job ``runtime_env`` for training: import ``madapter``, filter the cleaner's noise and
    pass on the MLflow/Prefect credentials of :data:`CREDENTIAL_ENV_VARS` that are set.

    Every actor and task of the job inherits it, including the Train controller and the
    detached cleaner the controller starts, so the filter reaches the process that logs.
    """
    env_vars = {
        "PYTHONPATH": str(package_root()),
        # OpenMP threads that sleep instead of spinning when they wait: on a machine shared with
        # other processes (2 training workers + the features actor on 2 cores) spinning threads
        # steal each other's cores; benchmarks/feature_cache.py measured a backbone forward 15-30x
        # slower on a busy box without it.  A user's own setting wins.
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
    }
    env_vars.update(credential_env())
    return {"env_vars": env_vars, "worker_process_setup_hook": SETUP_HOOK}


def credential_env() -> dict[str, str]:
    """The :data:`CREDENTIAL_ENV_VARS` that are set (and not empty) in this process's environment."""
    return {name: os.environ[name] for name in CREDENTIAL_ENV_VARS if os.environ.get(name)}


def start_ray(params: Params, cpus_needed: float | None = None, object_store_mb: int | None = None) -> None:
    """Connect to ``$RAY_ADDRESS`` or start a small local Ray (bounded object store, no dashboard).

    ``cpus_needed`` (default: the train stage's ``train.num_workers x train.cpus_per_worker``) makes
    a local Ray advertise at least that many CPUs; ``object_store_mb`` defaults to
    ``train.object_store_mb``.  The job's runtime env (:func:`worker_runtime_env`) puts ``madapter``
    on the workers' path and filters Ray Train's per-second PlacementGroupCleaner retry warning,
    which a dashboard-less Ray would otherwise print dozens of times per run.  A Ray that the
    caller initialised already is used as it is.
    """
    import ray

    if ray.is_initialized():
        return
    runtime_env = worker_runtime_env()
    if os.environ.get("RAY_ADDRESS"):
        ray.init(runtime_env=runtime_env)
        return
    needed = params.train.num_workers * params.train.cpus_per_worker if cpus_needed is None else cpus_needed
    store_mb = params.train.object_store_mb if object_store_mb is None else object_store_mb
    quiet_auth_default()
    ray.init(
        # "local": always a new instance. Without it Ray joins whatever `ray start` or test
        # cluster it finds in /tmp/ray/ray_current_cluster on this machine (and then refuses num_cpus).
        address="local",
        num_cpus=max(os.cpu_count() or 1, math.ceil(needed)),
        object_store_memory=store_mb * 2**20,
        include_dashboard=False,
        runtime_env=runtime_env,
        log_to_driver=True,
    )
