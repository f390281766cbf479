"""The Ray job's runtime env carries the MLflow/Prefect credentials that are set, and only those.

(The end-to-end proof, Ray workers logging to an MLflow server with basic auth, is
test_mlflow_postgres.py; this pins the exact variables cheaply.)
"""

from __future__ import annotations

import pytest

from madapter.ray_runtime import CREDENTIAL_ENV_VARS, worker_runtime_env


def test_set_credentials_reach_the_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ci-user")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "a-long-password")
    monkeypatch.setenv("PREFECT_API_AUTH_STRING", "ci-user:another-password")
    env_vars = worker_runtime_env()["env_vars"]
    assert env_vars["MLFLOW_TRACKING_USERNAME"] == "ci-user"
    assert env_vars["MLFLOW_TRACKING_PASSWORD"] == "a-long-password"
    assert env_vars["PREFECT_API_AUTH_STRING"] == "ci-user:another-password"


def test_unset_or_empty_credentials_are_not_passed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "")
    env_vars = worker_runtime_env()["env_vars"]
    assert not set(CREDENTIAL_ENV_VARS) & set(env_vars)
    assert {"PYTHONPATH", "OMP_WAIT_POLICY"} <= set(env_vars)

