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
does not occur.  So this one message, and nothing else, is dropped at its source: a
``logging.Filter`` on the cleaner's logger, installed in every Ray worker process by Ray's
documented ``worker_process_setup_hook``.  The cleaner's other warnings (e.g. that it is
cleaning up after a dead controller), Ray's own warnings, the training progress bars and the
per-epoch lines are untouched.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from madapter.config import Params

CLEANER_LOGGER = "ray.train.v2._internal.execution.controller.placement_group_cleaner"
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
    """Ray's ``worker_process_setup_hook``: install :class:`DropCleanerRetries` once per process."""
    cleaner_logger = logging.getLogger(CLEANER_LOGGER)
    if not any(isinstance(f, DropCleanerRetries) for f in cleaner_logger.filters):
        cleaner_logger.addFilter(DropCleanerRetries())


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
