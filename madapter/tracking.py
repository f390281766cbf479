"""MLflow helpers: where runs go, and what every run records about its provenance.

Tracking URI, in order: ``params.mlflow.tracking_uri``, ``$MLFLOW_TRACKING_URI``, else an
embedded store: ``sqlite:///<outputs_dir>/mlflow.db`` with artifacts in
``<outputs_dir>/mlartifacts``.  Paths are made absolute because the same URI is handed to
Ray workers whose working directory may differ from the driver's.

All logging goes through an explicit :class:`mlflow.MlflowClient` and run id instead of the
global "active run": training logs from a Ray worker process, evaluation and registration
from later stages, and all of them must write into the same run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from madapter.config import Params, flatten_keys
from madapter.fileio import file_digest

logger = logging.getLogger(__name__)

RUN_NAME_TAG = "madapter.ray_run_name"


def resolve_tracking_uri(params: Params) -> str:
    """The MLflow tracking URI for this configuration (see module docstring for the order)."""
    uri = params.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return absolute_sqlite_uri(uri)
    db = (Path(params.base.outputs_dir) / "mlflow.db").resolve()
    return f"sqlite:///{db}"


SQLITE_PREFIX = "sqlite:///"


def absolute_sqlite_uri(uri: str) -> str:
    """``sqlite:///relative.db`` made absolute (against this process's working directory).

    A relative SQLite path means a different database in every process that has another working
    directory: a Ray worker would not find the run its driver created.  Other URIs are unchanged.
    """
    if not uri.startswith(SQLITE_PREFIX) or uri.startswith(SQLITE_PREFIX + "/"):
        return uri
    return SQLITE_PREFIX + str(Path(uri[len(SQLITE_PREFIX):]).resolve())


@contextlib.contextmanager
def fluent_tracking(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (``mlflow.start_run``, ``log_model``, ``load_model``) at ``uri`` for a block.

    ``mlflow.set_tracking_uri`` also exports ``$MLFLOW_TRACKING_URI`` to the process environment.
    Left in place, every later stage in the same process (a Prefect flow, a notebook, a test
    session) and every subprocess it starts would silently log to this store, so the previous
    URIs and environment are restored on exit.
    """
    import mlflow

    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    saved_env = {k: os.environ.get(k) for k in keys}
    saved_tracking, saved_registry = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(saved_tracking)
        mlflow.set_registry_uri(saved_registry)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def default_artifact_location(params: Params, tracking_uri: str) -> str | None:
    """Artifact root for a new experiment: our local dir for the embedded store, else the server's choice."""
    if tracking_uri.startswith("sqlite:") or tracking_uri.startswith("file:"):
        return (Path(params.base.outputs_dir) / "mlartifacts").resolve().as_uri()
    return None


def get_client(params: Params):
    """An :class:`mlflow.MlflowClient` for the resolved tracking (and registry) URI."""
    import mlflow

    uri = resolve_tracking_uri(params)
    if uri.startswith("sqlite:"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(client, params: Params) -> str:
    """Id of ``params.mlflow.experiment``, created (with our artifact location) if missing."""
    name = params.mlflow.experiment
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            raise RuntimeError(
                f"params.yaml: mlflow.experiment: experiment '{name}' is deleted in {client.tracking_uri}; "
                "restore it (mlflow experiments restore) or choose another name"
            )
        return experiment.experiment_id
    location = default_artifact_location(params, client.tracking_uri)
    logger.info("creating MLflow experiment %r at %s", name, client.tracking_uri)
    return client.create_experiment(name, artifact_location=location)


def flatten_params(params: Params) -> dict[str, str]:
    """Every resolved parameter, one MLflow param per schema field, for ``log_params``.

    A mapping field (``download.checksums``) is ONE param holding JSON: its keys are file names
    with dots, which as ``download.checksums.UCF101.rar`` could not be told apart from sections,
    and may hold characters MLflow refuses in a param name.  Lists are JSON too; scalars keep
    ``str()`` so runs logged before this change compare equal in the MLflow UI.
    """
    flat = flatten_keys(params.model_dump(mode="json"))
    return {key: _param_value(value) for key, value in flat.items()}


def _param_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def git_info(repo: Path | None = None) -> dict[str, str]:
    """Commit hash and whether the worktree had uncommitted changes (empty when not a git repo)."""
    cwd = repo or Path.cwd()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"git_commit": commit, "git_dirty": str(bool(dirty)).lower()}


def dvc_hashes(repo: Path | None = None) -> dict[str, str]:
    """DVC's own hashes of params and data: ``dvc.lock`` out hashes per stage plus params.yaml md5.

    These identify exactly which data version a run trained on (what ``dvc checkout`` restores).
    Missing files just give fewer tags: a run outside ``dvc repro`` is still tracked.
    """
    root = repo or Path.cwd()
    tags: dict[str, str] = {}
    params_file = root / "params.yaml"
    if params_file.is_file():
        tags["dvc.params_md5"] = file_digest(params_file, "md5")
    lock = root / "dvc.lock"
    if lock.is_file():
        tags["dvc.lock_md5"] = file_digest(lock, "md5")
        try:
            stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
        except yaml.YAMLError:
            logger.warning("%s: not valid YAML; DVC data hashes not recorded", lock)
            stages = {}
        for stage, body in stages.items():
            for out in (body or {}).get("outs", []) or []:
                digest = out.get("md5") or out.get("hash") or ""
                tags[f"dvc.{stage}.{out.get('path')}"] = str(digest)
    return tags


def provenance_tags(params: Params) -> dict[str, str]:
    """Tags every training run carries: code version, data version, dataset."""
    tags = {"dataset": params.dataset.name, "tuning": params.model.tuning, "backbone": params.model.backbone}
    tags.update(git_info())
    tags.update(dvc_hashes())
    return tags


def log_params_batched(client, run_id: str, flat: dict[str, str]) -> None:
    """Log params in batches (the REST API caps a batch at 100 params); re-logging equal values is fine."""
    from mlflow.entities import Param

    items = [Param(k, v[:6000]) for k, v in sorted(flat.items())]
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=items[start : start + 100])


def log_dict_artifact(client, run_id: str, data: Any, artifact_file: str) -> None:
    """Log a JSON/YAML document into the run, choosing the format from the file suffix."""
    if artifact_file.endswith((".yaml", ".yml")):
        client.log_text(run_id, yaml.safe_dump(data, sort_keys=False), artifact_file)
    else:
        client.log_text(run_id, json.dumps(data, indent=2, sort_keys=True), artifact_file)


def metric(key: str, value: float, step: int = 0):
    """One :class:`mlflow.entities.Metric` stamped now (what ``log_batch`` takes)."""
    from mlflow.entities import Metric

    return Metric(key, float(value), int(time.time() * 1000), int(step))


def log_metrics(client, run_id: str, values: dict[str, float], step: int = 0) -> None:
    """Log ``values`` at ``step`` in one batch, skipping non-finite ones (NaN when a split is empty)."""
    client.log_batch(run_id, metrics=[metric(k, v, step) for k, v in values.items() if math.isfinite(v)])
