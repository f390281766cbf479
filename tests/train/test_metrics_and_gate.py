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
from madapter.train import latest_checkpoint_dir, lr_lambda


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
