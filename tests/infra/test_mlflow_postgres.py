"""train -> evaluate -> register against a real ``mlflow server`` on a real PostgreSQL with MLflow's
basic-auth app (the compose stack's server), everything read back through the server.

The stage functions are the ones ``python -m madapter <stage>`` runs (:mod:`madapter.stages`); training
is a real Ray Train run (1 worker, 2 epochs, tiny data) on a Ray cluster the driver reaches through
``RAY_ADDRESS``, as on the scale stack.  The credentials exist only in the driver's
environment (``MLFLOW_TRACKING_USERNAME``/``PASSWORD``): the Ray workers, started without them, can
log their epochs only because the job's runtime env passes them on (:mod:`madapter.ray_runtime`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from mlflow import MlflowClient

from madapter.evaluate import evaluate
from madapter.paths import StagePaths
from madapter.registry import register
from madapter.train.driver import train
from tests.common.synthetic_data import TINY_DATA, make_params
from tests.infra.conftest import MlflowServer

pytestmark = pytest.mark.integration
EPOCHS = 2


def _params(data_dir: Path, outputs: Path, server: MlflowServer, model_name: str):
    """Tiny, fast settings: one Ray worker, two epochs, evaluation decoding in-process."""
    return make_params(
        data_dir, outputs, server.uri, data_sections=TINY_DATA,
        train={"epochs": EPOCHS, "num_workers": 1, "cpus_per_worker": 1, "max_failures": 0},
        evaluate={"loader_workers": 0, "batch_size": 8},
        register={"model_name": model_name},
        mlflow={"experiment": f"infra-{model_name}"},
    )


def _run_pipeline_part(params, ray_address: str, monkeypatch: pytest.MonkeyPatch):
    """train -> evaluate -> register with the stage functions, the driver connecting by RAY_ADDRESS."""
    import ray

    monkeypatch.setenv("RAY_ADDRESS", ray_address)
    assert not ray.is_initialized()
    try:
        trained = train(params)
    finally:
        ray.shutdown()  # disconnect this driver; the cluster stays up for the next test
    return trained, evaluate(params), register(params)


def _check_read_back(client: MlflowClient, params, trained, metrics: dict, registered) -> None:
    """The registry alias, the evaluation metrics and every epoch, as the server returns them."""
    name = params.register.model_name
    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.version == registered.version and registered.alias == "champion"
    assert champion.run_id == trained.run_id
    run = client.get_run(trained.run_id)
    assert run.info.status == "FINISHED"
    key = f"test_{metrics['protocol']}_top1"
    assert run.data.metrics[key] == pytest.approx(metrics["top1"])
    history = json.loads((StagePaths.from_params(params).train / "history.json").read_text())
    assert len(history) == EPOCHS
    logged = client.get_metric_history(trained.run_id, "train_loss")
    assert sorted(m.step for m in logged) == [record["epoch"] for record in history]
    # the artifacts went through the server's proxy into its artifact destination
    assert any(a.path == "label_map.json" for a in client.list_artifacts(trained.run_id))


def test_basic_auth_refuses_anonymous_and_wrong_password(mlflow_auth: MlflowServer) -> None:
    url = f"{mlflow_auth.uri}/api/2.0/mlflow/experiments/search"
    query = {"max_results": 1}
    assert requests.get(url, params=query, timeout=30).status_code == 401
    wrong = (mlflow_auth.username, mlflow_auth.password + "x")
    assert requests.get(url, params=query, auth=wrong, timeout=30).status_code == 401
    login = (mlflow_auth.username, mlflow_auth.password)
    assert requests.get(url, params=query, auth=login, timeout=30).status_code == 200


def test_pipeline_on_mlflow_with_basic_auth(mlflow_auth: MlflowServer, credential_free_ray: str, data_dir: Path,
                                            tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capfd: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", mlflow_auth.username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", mlflow_auth.password)
    params = _params(data_dir, tmp_path / "auth", mlflow_auth, "madapter-pg-auth")
    trained, metrics, registered = _run_pipeline_part(params, credential_free_ray, monkeypatch)
    _check_read_back(MlflowClient(mlflow_auth.uri, registry_uri=mlflow_auth.uri), params, trained, metrics,
                     registered)
    out, err = capfd.readouterr()
    assert mlflow_auth.password not in out + err + caplog.text, "the MLflow password was printed or logged"
