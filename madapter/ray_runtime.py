"""How Ray is started (:func:`start_ray`, shared by every stage that runs on Ray) and the job's runtime
environment: ``madapter`` on the workers' path, the MLflow/Prefect credentials a cluster's workers need,
and :mod:`madapter.ray_worker_setup` as the hook every worker process runs first.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from madapter.config import Params

SETUP_HOOK = "madapter.ray_worker_setup.setup_worker_process"
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
