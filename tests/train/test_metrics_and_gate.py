"""Fast unit tests: metrics, multi-view averaging, LR schedule, tracking helpers, promotion rule."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from madapter import metrics
from madapter.config import params_from_dict
from madapter.registry import decide
from madapter.tracking import dvc_hashes, flatten_params, resolve_tracking_uri
from madapter.train.optim import lr_lambda
from madapter.train.state import latest_checkpoint_dir


def test_average_views_matches_hand_computed_probabilities() -> None:
    # one video, two views, two classes: view 1 logits (0, ln 3) -> probs (1/4, 3/4);
    # view 2 logits (ln 4, 0) -> probs (4/5, 1/5); average -> (0.525, 0.475).
    logits = np.array([[[0.0, math.log(3)], [math.log(4), 0.0]]])
    np.testing.assert_allclose(metrics.average_views(logits), [[0.525, 0.475]], atol=1e-12)
    # averaging raw logits would have picked class 0 with (0.693, 0.549): probabilities, not logits
    assert metrics.average_views(logits)[0].argmax() == 0


def test_average_views_rejects_flat_input() -> None:
    with pytest.raises(ValueError, match=r"\[N, V, C\]"):
        metrics.average_views(np.zeros((2, 3)))


def test_topk_and_ties() -> None:
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    labels = np.array([1, 1, 0])
    assert metrics.topk_accuracy(scores, labels, 1) == pytest.approx(1 / 3)  # tie goes to class 0 like argmax
    assert metrics.topk_accuracy(scores, labels, 2) == pytest.approx(2 / 3)
    assert metrics.topk_accuracy(scores, labels, 5) == 1.0  # k capped at the class count


def test_confusion_and_mean_class_accuracy_skip_absent_classes() -> None:
    preds = np.array([0, 0, 1, 1, 1])
    labels = np.array([0, 1, 1, 1, 1])
    matrix = metrics.confusion_matrix(preds, labels, 3)
    assert matrix.tolist() == [[1, 0, 0], [1, 3, 0], [0, 0, 0]]
    assert metrics.mean_class_accuracy(matrix) == pytest.approx((1.0 + 0.75) / 2)  # class 2 has no videos
    report = metrics.classification_report(np.eye(3)[preds], labels, 3)
    assert report["top1"] == pytest.approx(0.8) and report["num_videos"] == 5


def test_plot_and_csv_outputs(tmp_path: Path) -> None:
    matrix = np.array([[2, 1], [0, 3]])
    classes = ["a b", "c"]
    rows = metrics.write_confusion_csv(matrix, classes, tmp_path / "c.csv").read_text().splitlines()
    assert rows[0] == "actual,predicted,count" and "a b,c,1" in rows
    per_class = metrics.write_per_class_csv(matrix, classes, tmp_path / "p.csv").read_text().splitlines()
    assert per_class[1] == "a b,0.666667,3"
    png = metrics.plot_confusion(matrix, classes, tmp_path / "c.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_lr_schedule_warms_up_then_decays_to_zero() -> None:
    values = [lr_lambda(s, warmup_steps=4, total_steps=20) for s in range(21)]
    assert values[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(values[4:], values[5:], strict=False))
    assert values[20] == pytest.approx(0.0, abs=1e-12)


def test_tracking_uri_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = params_from_dict({"base": {"outputs_dir": str(tmp_path / "out")}})
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(params) == f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert resolve_tracking_uri(params) == "http://127.0.0.1:1"
    explicit = params_from_dict({"mlflow": {"tracking_uri": "http://127.0.0.1:2"}})
    assert resolve_tracking_uri(explicit) == "http://127.0.0.1:2"


def test_flatten_params_covers_every_section() -> None:
    flat = flatten_params(params_from_dict({"train": {"lr": 0.5}, "model": {"levels": [3, 7]}}))
    assert flat["train.lr"] == "0.5" and flat["model.levels"] == "[3, 7]" and flat["mlflow.tracking_uri"] == "null"
    assert {k.split(".")[0] for k in flat} >= {"base", "dataset", "model", "train", "evaluate", "register"}


def test_dvc_hashes_read_lock_outs(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text("train: {lr: 1}\n")
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  decode:\n    outs:\n    - path: data/frames/synthetic\n      md5: abc.dir\n"
    )
    tags = dvc_hashes(tmp_path)
    assert tags["dvc.decode.data/frames/synthetic"] == "abc.dir"
    assert len(tags["dvc.params_md5"]) == 32 and "dvc.lock_md5" in tags


def test_latest_checkpoint_dir_ignores_incomplete(tmp_path: Path) -> None:
    for name in ("epoch-0001", "epoch-0002", "epoch-0003"):
        (tmp_path / name).mkdir()
    (tmp_path / "epoch-0001" / "meta.json").write_text("{}")
    (tmp_path / "epoch-0002" / "meta.json").write_text("{}")  # epoch 3 has no meta: not complete
    assert latest_checkpoint_dir(tmp_path).name == "epoch-0002"
    assert latest_checkpoint_dir(tmp_path / "missing") is None


TAGS = {"metric": "top1", "protocol": "4x1x1", "dataset": "synthetic", "split": "test"}


def test_gate_promotes_only_a_strictly_better_comparable_model() -> None:
    assert decide({**TAGS, "top1": "0.5"}, None, "top1", 0.0).promote
    better = decide({**TAGS, "top1": "0.75"}, {**TAGS, "top1": "0.5"}, "top1", 0.0)
    assert better.promote and "beats champion 0.5000" in better.reason
    tie = decide({**TAGS, "top1": "0.5"}, {**TAGS, "top1": "0.5"}, "top1", 0.0)
    assert not tie.promote and "does not beat" in tie.reason
    small = decide({**TAGS, "top1": "0.55"}, {**TAGS, "top1": "0.5"}, "top1", 0.1)
    assert not small.promote
    other_protocol = decide({**TAGS, "top1": "0.9"}, {**TAGS, "protocol": "4x4x3", "top1": "0.1"}, "top1", 0.0)
    assert not other_protocol.promote and "not comparable" in other_protocol.reason


def test_fluent_tracking_leaves_no_tracking_uri_behind(tmp_path, monkeypatch) -> None:
    """register/predict use MLflow's fluent API; the URI they set must not leak into later stages."""
    import mlflow

    from madapter.tracking import fluent_tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = mlflow.get_tracking_uri()
    uri = f"sqlite:///{tmp_path / 'scoped.db'}"
    with fluent_tracking(uri):
        assert mlflow.get_tracking_uri() == uri
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert mlflow.get_tracking_uri() == before


def test_gate_never_promotes_an_incomplete_run_even_without_a_champion() -> None:
    reason = "incomplete training run (MLflow status KILLED): max_epochs_per_run: stopped after epoch 1/2"
    no_champion = decide({**TAGS, "top1": "1.0"}, None, "top1", 0.0, incomplete=reason)
    assert not no_champion.promote and no_champion.reason == f"not eligible for champion: {reason}"
    worse_champion = decide({**TAGS, "top1": "1.0"}, {**TAGS, "top1": "0.1"}, "top1", 0.0, incomplete=reason)
    assert not worse_champion.promote


def test_incomplete_reason_needs_completed_run_json_and_finished_status() -> None:
    from madapter.run_status import STOP_REASON_TAG, budget_reason, incomplete_reason

    done = {"completed": True, "epochs_done": 3, "epochs": 3}
    assert incomplete_reason(done, "FINISHED", {STOP_REASON_TAG: "completed: 3/3 epochs"}) is None
    budget = budget_reason(1, 3, 1)
    stopped = incomplete_reason({"completed": False, "epochs_done": 1, "epochs": 3}, "KILLED", {STOP_REASON_TAG: budget})
    assert stopped == f"incomplete training run (MLflow status KILLED): {budget}"
    failed = incomplete_reason(done, "FAILED", {STOP_REASON_TAG: "failed: RuntimeError: boom"})
    assert failed == "training run is FAILED, not FINISHED: failed: RuntimeError: boom"
    assert "unknown number of epochs" in incomplete_reason({"run_id": "x"}, "FINISHED", {})  # old/foreign run.json
    assert incomplete_reason(done, "RUNNING", {}) == "training run is RUNNING, not FINISHED"


@pytest.mark.parametrize("status", ["KILLED", "FAILED", "FINISHED"])
def test_logging_a_model_into_a_run_keeps_its_status_and_end_time(tmp_path: Path, status: str) -> None:
    """register logs the pyfunc through MLflow's fluent API, whose run context ends runs FINISHED."""
    import mlflow

    from madapter.registry import _logging_into_run
    from madapter.tracking import fluent_tracking

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("status", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    client.set_terminated(run_id, status=status, end_time=1_700_000_000_000)
    with fluent_tracking(uri), _logging_into_run(client, run_id):
        assert client.get_run(run_id).info.status == "RUNNING"  # really the active run while logging
        mlflow.log_text("weights", "model/weights.txt")
    info = client.get_run(run_id).info
    assert (info.status, info.end_time) == (status, 1_700_000_000_000)
    assert mlflow.active_run() is None
    with pytest.raises(RuntimeError, match="boom"), fluent_tracking(uri), _logging_into_run(client, run_id):
        raise RuntimeError("boom")  # a failed log_model must not turn the training run FAILED either
    assert client.get_run(run_id).info.status == status


def test_ray_worker_filter_drops_only_the_cleaner_retry_warning() -> None:
    import importlib
    import logging

    from madapter.ray_runtime import worker_runtime_env
    from madapter.ray_worker_setup import CLEANER_LOGGER, DropCleanerRetries, setup_worker_process

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord(CLEANER_LOGGER, logging.WARNING, __file__, 1, message, None, None)

    drop = DropCleanerRetries()
    assert not drop.filter(record(
        "Failed to query Ray Train Controller actor state. State API may be temporarily unavailable. "
        "Continuing to monitor."
    ))
    assert drop.filter(record("Detected that the Ray Train controller actor (abc) is dead. Cleaning up ..."))
    cleaner = logging.getLogger(CLEANER_LOGGER)
    before = list(cleaner.filters)
    try:
        setup_worker_process()
        setup_worker_process()  # Ray may run the hook again in a reused process: one filter only
        assert sum(isinstance(f, DropCleanerRetries) for f in cleaner.filters) == 1
    finally:
        cleaner.filters[:] = before
    env = worker_runtime_env()
    module, _, name = env["worker_process_setup_hook"].rpartition(".")
    assert getattr(importlib.import_module(module), name) is setup_worker_process  # the hook Ray imports is this one
    assert Path(env["env_vars"]["PYTHONPATH"], *module.split(".")).with_suffix(".py").is_file()


def test_register_names_run_json_when_its_mlflow_run_is_not_in_the_store(tmp_path: Path) -> None:
    import json

    from madapter.config import ConfigError
    from madapter.registry import register

    out = tmp_path / "out"
    (out / "train").mkdir(parents=True)
    (out / "evaluate").mkdir()
    (out / "train" / "run.json").write_text(json.dumps({"run_id": "0" * 32, "completed": True}))
    (out / "evaluate" / "metrics.json").write_text(json.dumps({"top1": 0.5}))
    params = params_from_dict({"base": {"outputs_dir": str(out)},
                               "mlflow": {"tracking_uri": f"sqlite:///{tmp_path / 'other.db'}"}})
    with pytest.raises(ConfigError, match=r"train/run\.json: MLflow run 0{32} is not in sqlite:///.*other\.db"):
        register(params)
