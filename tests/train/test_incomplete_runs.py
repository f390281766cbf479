"""An incomplete training run is never champion, and its MLflow status says so until it completes.

One real scenario on the tier's Ray session and MLflow server: train with
``train.max_epochs_per_run: 1`` of 3 epochs -> evaluate -> register into a registered model that
has no champion yet; then train again (resumes the same Ray and MLflow run) -> evaluate -> register.
The recipe is the ``reference`` run's (tests/train/conftest.py), so resuming must end with the
weights and losses of that uninterrupted run: resuming must not change what is learned.
The statuses are read after each stage, because each stage used to be able to change them:
``register`` logged the model inside ``mlflow.start_run(run_id=...)``, which ends the run FINISHED.

The same runs check the log noise of issue 8 point 10: Ray Train's PlacementGroupCleaner used to
write "Failed to query Ray Train Controller actor state" once a second into its worker log (and
so onto the driver's terminal); the Ray session's log files must not contain it, while the
per-epoch line of rank 0 must still be there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from madapter.config import Params
from madapter.evaluate import evaluate
from madapter.ray_worker_setup import CLEANER_RETRY_MESSAGE
from madapter.registry import RegisterResult, register
from madapter.run_status import COMPLETED_TAG, STOP_REASON_TAG
from madapter.train.driver import TrainResult, train
from tests.common.fixtures import local_ray
from tests.common.synthetic_data import make_params

pytestmark = pytest.mark.integration
MODEL = "madapter-incomplete"


@dataclass
class Stage:
    """What one train -> evaluate -> register round left behind, read right after each stage."""

    trained: TrainResult
    after_train: Run
    after_evaluate: Run
    registration: RegisterResult
    after_register: Run
    champion_after_register: str | None


def _client(uri: str) -> MlflowClient:
    return MlflowClient(uri, registry_uri=uri)


def _champion(client: MlflowClient) -> str | None:
    try:
        return client.get_model_version_by_alias(MODEL, "champion").version
    except MlflowException:
        return None


def _round(params: Params, client: MlflowClient) -> Stage:
    trained = train(params)
    after_train = client.get_run(trained.run_id)
    evaluate(params)
    after_evaluate = client.get_run(trained.run_id)
    registration = register(params)
    return Stage(trained, after_train, after_evaluate, registration, client.get_run(trained.run_id), _champion(client))


@pytest.fixture(scope="module")
def rounds(data_dir: Path, mlflow_server: str, tmp_path_factory: pytest.TempPathFactory):
    """Round 1 stopped by the epoch budget (1 of 3 epochs), round 2 resumes it to completion."""
    local_ray()
    outputs = tmp_path_factory.mktemp("budget") / "budget"
    budget = make_params(
        data_dir, outputs, mlflow_server, train={"max_epochs_per_run": 1}, register={"model_name": MODEL}
    )
    client = _client(mlflow_server)
    stopped = _round(budget, client)
    resumed = _round(budget.model_copy(update={"train": budget.train.model_copy(update={"max_epochs_per_run": None})}),
                     client)
    return stopped, resumed


def test_budget_stopped_run_stays_killed_and_is_never_champion(rounds, mlflow_server: str) -> None:
    stopped, _ = rounds
    assert not stopped.trained.completed and stopped.trained.epochs_done == 1
    for run in (stopped.after_train, stopped.after_evaluate, stopped.after_register):
        assert run.info.status == "KILLED"
        assert run.data.tags[STOP_REASON_TAG].startswith("max_epochs_per_run: stopped after epoch 1/3")
        assert run.data.tags[COMPLETED_TAG] == "false"
    # register must also leave the run's end time (its training duration) alone
    assert stopped.after_register.info.end_time == stopped.after_train.info.end_time
    assert "test_4x1x1_top1" in stopped.after_evaluate.data.metrics  # evaluate did log into the run

    registration = stopped.registration
    assert registration.champion_before is None, "the scenario needs a registered model without a champion"
    assert registration.alias == "challenger" and not registration.promoted and not registration.complete
    assert registration.run_status == "KILLED" and "not eligible for champion" in registration.reason
    assert "max_epochs_per_run" in registration.reason
    assert stopped.champion_after_register is None

    version = _client(mlflow_server).get_model_version(MODEL, registration.version)
    assert version.tags["incomplete"] == "true" and version.tags["run_status"] == "KILLED"
    assert "max_epochs_per_run" in version.tags["incomplete_reason"] and version.tags["epochs"] == "1/3"
    assert version.tags["decision"] == "challenger"


def _weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint, map_location="cpu", weights_only=True)["trainable_state_dict"]


def test_resume_continues_same_mlflow_run_and_matches_uninterrupted(rounds, reference, mlflow_server: str) -> None:
    stopped, resumed = rounds
    _, reference = reference
    assert not stopped.trained.completed and stopped.trained.epochs_done == 1
    assert stopped.after_train.info.status == "KILLED"

    assert resumed.trained.completed and resumed.trained.epochs_done == 3
    client = _client(mlflow_server)
    experiment = client.get_experiment_by_name("madapter-tests")
    runs = client.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'budget'")
    assert resumed.trained.run_id == stopped.trained.run_id and len(runs) == 1
    steps = [m.step for m in client.get_metric_history(resumed.trained.run_id, "train_loss")]
    assert steps == [1, 2, 3]  # epoch 1 not repeated
    assert [h["epoch"] for h in resumed.trained.history] == [1, 2, 3]

    ref_w, res_w = _weights(reference.checkpoint), _weights(resumed.trained.checkpoint)
    assert ref_w.keys() == res_w.keys()
    for key in ref_w:
        torch.testing.assert_close(res_w[key], ref_w[key], atol=1e-5, rtol=1e-4, msg=key)
    for a, b in zip(reference.history, resumed.trained.history, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)


def test_resumed_run_finishes_and_its_version_is_promoted(rounds, mlflow_server: str) -> None:
    stopped, resumed = rounds
    assert resumed.trained.run_id == stopped.trained.run_id  # the same MLflow run, continued
    assert resumed.trained.completed and resumed.trained.epochs_done == 3
    for run in (resumed.after_train, resumed.after_evaluate, resumed.after_register):
        assert run.info.status == "FINISHED"
        assert run.data.tags[STOP_REASON_TAG] == "completed: 3/3 epochs" and run.data.tags[COMPLETED_TAG] == "true"

    registration = resumed.registration
    assert registration.complete and registration.promoted and registration.alias == "champion"
    assert registration.champion_before is None and resumed.champion_after_register == registration.version
    client = _client(mlflow_server)
    assert client.get_model_version(MODEL, registration.version).tags["incomplete"] == "false"
    # the half-trained version keeps its tag, so it cannot be mistaken for the complete one later
    assert client.get_model_version(MODEL, stopped.registration.version).tags["incomplete"] == "true"


def _ray_log_files() -> list[Path]:
    import ray

    # no public API names the session's log dir; /tmp/ray/session_latest may be another user's
    logs = Path(ray._private.worker.global_worker.node.get_logs_dir_path())
    return [p for p in logs.rglob("*") if p.is_file() and p.suffix in {".out", ".err", ".log"}]


def test_training_logs_have_the_epoch_line_but_not_the_cleaner_retries(rounds) -> None:
    files = _ray_log_files()
    texts = {path: path.read_text(errors="replace") for path in files}
    noisy = {path.name: text.count(CLEANER_RETRY_MESSAGE) for path, text in texts.items() if CLEANER_RETRY_MESSAGE in text}
    assert not noisy, f"PlacementGroupCleaner retry warnings in the Ray logs: {noisy}"
    # the filter is that narrow: rank 0's per-epoch line of both rounds is still logged
    epoch_lines = [line for text in texts.values() for line in text.splitlines() if "epoch 1/3: train " in line
                   or "epoch 3/3: train " in line]
    assert any("epoch 1/3: train " in line for line in epoch_lines) and any("epoch 3/3: train " in line for line in epoch_lines)
