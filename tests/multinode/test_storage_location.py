"""``train.storage_path`` as a path or a URI, and the epoch log that Ray's controller keeps (no Ray here).

URIs must reach Ray exactly as written (``Path`` folds ``s3://b`` into ``s3:/b``), and the driver
must find a run's checkpoints through the same pyarrow filesystem Ray writes them with.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
from mlflow import MlflowClient

from madapter.config import ConfigError, TrainSection
from madapter.train.epoch_metrics import MARKER_KEY, EpochMetrics, epoch_values, log_missing_epochs
from madapter.train.loop import placement_tag
from madapter.train.state import META_FILE, latest_checkpoint_dir, read_meta
from madapter.train.storage import is_uri, join, local_dir, resolve_storage


def test_uris_are_kept_as_written_and_paths_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for uri in ("s3://bucket/runs", "gs://bucket/runs", "file:///mnt/shared/ray"):
        assert TrainSection(storage_path=uri).storage_path == uri
    assert TrainSection(storage_path="outputs/ray").storage_path == Path("outputs/ray")
    monkeypatch.chdir(tmp_path)
    assert resolve_storage(Path("outputs/ray")) == str(tmp_path / "outputs" / "ray")
    assert resolve_storage(f"file://{tmp_path}/ray") == f"file://{tmp_path}/ray"
    assert join("s3://bucket/runs/", "run-1", "epoch-0001") == "s3://bucket/runs/run-1/epoch-0001"
    assert join("/data/ray", "run-1") == "/data/ray/run-1"
    assert is_uri("gs://b") and not is_uri("/mnt/nfs/ray")


def test_a_uri_pyarrow_cannot_open_is_one_line_naming_the_key() -> None:
    with pytest.raises(ConfigError) as err:
        resolve_storage("nosuchfs://bucket/ray")
    line = str(err.value)
    assert "\n" not in line and line.startswith("params.yaml: train.storage_path: nosuchfs://bucket/ray: pyarrow")
    assert "s3:// / gs:// URI" in line


def test_local_dir_of_paths_file_uris_and_remote_storage(tmp_path: Path) -> None:
    assert local_dir(str(tmp_path)) == tmp_path
    assert local_dir(f"file://{tmp_path}/x") == tmp_path / "x"
    assert local_dir("mock://bucket/x") is None  # pyarrow's in-memory filesystem: not on this machine's disk


def test_latest_checkpoint_of_a_uri_run_dir_goes_through_pyarrow(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for epoch, complete in ((1, True), (2, True), (10, False)):  # epoch 10 is still being written
        (run / f"epoch-{epoch:04d}").mkdir(parents=True)
        if complete:
            (run / f"epoch-{epoch:04d}" / META_FILE).write_text(json.dumps({"epoch": epoch, "run_id": "r1"}))
    (run / "epoch-notes.txt").write_text("a file, not a checkpoint")
    uri = f"file://{run}"
    assert latest_checkpoint_dir(uri) == f"{uri}/epoch-0002"
    assert read_meta(f"{uri}/epoch-0002") == {"epoch": 2, "run_id": "r1"}
    assert latest_checkpoint_dir(run) == run / "epoch-0002"  # a local path: a Path, as before
    assert latest_checkpoint_dir(f"file://{tmp_path}/missing") is None


def test_placement_tag_names_each_node_once_with_its_ranks() -> None:
    placement = [{"rank": r, "node_id": n, "node_ip": "10.0.0.1" if n == "a" else "10.0.0.2", "host": "h"}
                 for r, n in ((1, "b"), (0, "a"), (2, "a"))]
    assert placement_tag(placement) == "a (10.0.0.1): ranks 0,2; b (10.0.0.2): ranks 1"
    assert len(placement_tag(placement * 100, limit=50)) == 50


def _record(epoch: int) -> dict[str, float]:
    return {"epoch": epoch, "train_loss": 1.0 / epoch, "val_acc": 0.1 * epoch, MARKER_KEY: 2.0, "val_loss": float("nan")}


@pytest.mark.integration
def test_epoch_metrics_callback_logs_each_report_and_the_end_fills_only_gaps(mlflow_server: str) -> None:  # noqa: F811
    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("madapter-epoch-log") or client.get_experiment(
        client.create_experiment("madapter-epoch-log"))
    run_id = client.create_run(experiment.experiment_id).info.run_id
    callback = pickle.loads(pickle.dumps(EpochMetrics(mlflow_server, run_id)))  # as Ray ships it to the controller
    callback.after_report(None, [_record(1), _record(1)], checkpoint=None)  # rank 0's record, rank 1's
    callback.after_report(None, [{"note": "not an epoch report"}], checkpoint=None)
    # epoch 2 was registered but its log was lost (the controller died in between); 3 never reported
    history = [_record(1), _record(2), _record(3)]
    assert log_missing_epochs(client, run_id, history) == [2, 3]
    assert log_missing_epochs(client, run_id, history) == []
    for key in epoch_values(history[0]):
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert sorted(steps) == ([] if key == "val_loss" else [1, 2, 3]), key  # NaN is never logged
