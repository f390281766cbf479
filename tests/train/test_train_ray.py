"""Real Ray Train runs (2 CPU workers, gloo) logging to a real MLflow server.

Scenarios share one Ray session and one MLflow server.  On frames (the backbone every step): the
uninterrupted ``reference`` run (tests/train/conftest.py; the run stopped after epoch 1 and resumed
must end with its weights: tests/train/test_incomplete_runs.py), and a run whose worker is SIGKILLed
mid-epoch.  On cached features: the ``trained`` fixture, the run that must learn.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from madapter.train.driver import train
from madapter.train.identity import ray_run_name
from tests.common.synthetic_data import LEARN_EPOCHS, LEARNED_TOP1, make_params

pytestmark = pytest.mark.integration


def _runs(uri: str, run_name: str):
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("madapter-tests")
    return client.search_runs([experiment.experiment_id], filter_string=f"attributes.run_name = '{run_name}'")


def _steps(uri: str, run_id: str, key: str) -> list[int]:
    return [m.step for m in MlflowClient(uri).get_metric_history(run_id, key)]


def test_two_worker_frames_run_logs_one_mlflow_run_with_epochs_and_artifacts(reference, mlflow_server: str) -> None:
    params, result = reference
    assert result.completed and result.epochs_done == 3 and len(result.history) == 3
    runs = _runs(mlflow_server, params.train.run_name)
    assert [r.info.run_id for r in runs] == [result.run_id]  # exactly one MLflow run
    run = runs[0]
    assert run.info.status == "FINISHED"
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "clips_per_s", "peak_memory_mb"):
        assert _steps(mlflow_server, result.run_id, key) == [1, 2, 3], key
    assert run.data.params["train.lr"] == "0.003" and run.data.params["dataset.name"] == "synthetic"
    tags = run.data.tags
    assert tags["dataset"] == "synthetic" and len(tags["git_commit"]) == 40
    assert tags["train_source"] == "frames" and tags["train.model_class"] == "VideoClassifier"
    assert 0 < int(tags["params_trainable"]) < int(tags["params_backbone"])  # frozen backbone in the worker, small branch
    assert run.data.metrics["peak_memory_mb"] > 100 and run.data.metrics["clips_per_s"] > 0
    client = MlflowClient(mlflow_server)
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"label_map.json", "config", "train"} <= artifacts
    train_files = {a.path for a in client.list_artifacts(result.run_id, "train")}
    assert {"train/confusion_matrix.png", "train/per_class_accuracy.csv", "train/curves.png"} <= train_files
    # the stage outputs the next stages read
    run_json = json.loads((Path(params.base.outputs_dir) / "train" / "run.json").read_text())
    assert run_json["run_id"] == result.run_id and run_json["completed"] is True
    assert result.checkpoint.is_file()


def test_two_worker_run_on_cached_features_learns_the_training_set(trained, mlflow_server: str) -> None:
    """The run that must learn (held-out accuracy: tests/train/test_registry_serving.py): 2 workers
    train the head alone, and its training set is learned almost perfectly."""
    params, result = trained
    assert result.completed and result.epochs_done == LEARN_EPOCHS and len(result.history) == LEARN_EPOCHS
    (run,) = _runs(mlflow_server, params.train.run_name)
    assert run.info.run_id == result.run_id and run.info.status == "FINISHED"
    assert _steps(mlflow_server, result.run_id, "val_acc") == list(range(1, LEARN_EPOCHS + 1))
    tags = run.data.tags
    assert tags["train_source"] == "features" and tags["params_backbone"] == "0"  # no backbone in the workers
    first, last = result.history[0], result.history[-1]
    assert last["train_loss"] < 0.3 * first["train_loss"], (first, last)
    assert last["train_acc"] >= 0.9 and last["val_acc"] >= LEARNED_TOP1, last  # chance: 0.25


def _kill_rank_mid_epoch(run_dir: Path, rank: int, killed: dict, stop: threading.Event) -> None:
    """SIGKILL worker ``rank`` mid-epoch (epoch >= 2), once Ray has committed a first checkpoint.

    Ray commits checkpoints asynchronously (its snapshot can lag the workers by more than a short
    epoch), so the kill waits only for *some* committed checkpoint: recovery then resumes from
    a checkpoint, never from scratch, and epoch 1 is never logged twice.
    """
    status_file = run_dir / "workers" / f"rank-{rank}.json"
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    while not stop.is_set():
        try:
            status = json.loads(status_file.read_text())
            committed = snapshot.read_text() if snapshot.is_file() else ""
        except (OSError, ValueError):
            time.sleep(0.01)
            continue
        epoch = status.get("epoch") or 0
        if (
            epoch >= 2
            and status.get("state") == "training"
            and 1 <= status.get("step", 0) < status.get("steps", 0)
            and "epoch-0001" in committed
        ):
            os.kill(status["pid"], signal.SIGKILL)
            killed.update(status)
            return
        time.sleep(0.005)


def test_sigkilled_worker_recovers_from_last_checkpoint(
    data_dir: Path, mlflow_server: str, ray_session, tmp_path: Path
) -> None:
    # Batch size 1 and in-block adapters on ViT-S (7 frames): many slower steps per epoch, so
    # "mid-epoch after the previous checkpoint was committed" is a wide window to hit; with the
    # tiny default model an epoch takes ~0.25 s, less than Ray's checkpoint-commit latency.
    # 7 frames: as slow as the 8 stored, while leaving the stored grid room for temporal jitter.
    params = make_params(
        data_dir, tmp_path / "fault", mlflow_server,
        train={"batch_size": 1, "max_failures": 2, "epochs": 5},
        model={"num_frames": 7, "tuning": "inserted", "backbone": "vit_small_patch16_224", "width": 64},
    )
    run_dir = Path(params.train.storage_path) / ray_run_name(params)
    killed: dict = {}
    stop = threading.Event()
    watcher = threading.Thread(target=_kill_rank_mid_epoch, args=(run_dir, 1, killed, stop), daemon=True)
    watcher.start()
    try:
        result = train(params)
    finally:
        stop.set()
        watcher.join(5)
    assert killed, "the watcher never saw rank 1 mid-epoch (epoch >= 2) after a committed checkpoint"
    assert killed["step"] < killed["steps"]  # really mid-epoch
    assert result.completed and result.epochs_done == 5
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4, 5]  # history restored from the checkpoint
    after = json.loads((run_dir / "workers" / "rank-1.json").read_text())
    assert after["pid"] != killed["pid"] and after["state"] == "done"  # a new worker process finished
    runs = _runs(mlflow_server, "fault")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    steps = _steps(mlflow_server, result.run_id, "val_acc")
    # Resumed from a committed checkpoint; an epoch re-run after the kill is logged once, because
    # metrics are logged when Ray registers the epoch's checkpoint (madapter.train.epoch_metrics).
    assert steps == [1, 2, 3, 4, 5]
