"""The closing summary shows per-class accuracy and the order-blind baseline beside the model."""

from __future__ import annotations

import json
from pathlib import Path

from madapter.config import params_from_dict
from pipelines.baseline import BASELINE_DIR, BASELINE_EPOCHS, baseline_overrides
from pipelines.summary import collect_summary, to_markdown


def _write_eval(directory: Path, top1: float, per_class: dict[str, tuple[float, int]]) -> None:
    directory.mkdir(parents=True)
    (directory / "metrics.json").write_text(json.dumps({"top1": top1, "split": "test"}))
    rows = "".join(f"{name},{acc:.6f},{n}\n" for name, (acc, n) in per_class.items())
    (directory / "per_class.csv").write_text("class,accuracy,support\n" + rows)


def test_per_class_table_puts_the_baseline_beside_the_model(tmp_path):
    params = params_from_dict({"base": {"outputs_dir": "outputs"}})
    _write_eval(tmp_path / "outputs" / "evaluate", 0.95, {"rotate_cw": (1.0, 5), "rotate_ccw": (0.8, 5)})
    baseline = tmp_path / "outputs" / BASELINE_DIR
    _write_eval(baseline / "evaluate", 0.5, {"rotate_cw": (0.6, 5), "rotate_ccw": (0.4, 5)})

    text = to_markdown(collect_summary(params, tmp_path, baseline_dir=baseline))
    assert "| rotate_cw | 1.00 | 0.60 | 5 |" in text
    assert "| rotate_ccw | 0.80 | 0.40 | 5 |" in text
    assert "top-1 0.50 against 0.95" in text

    alone = to_markdown(collect_summary(params, tmp_path, baseline_dir=tmp_path / "nowhere"))
    assert "| rotate_cw | 1.00 | 5 |" in alone and "order-blind" not in alone


def test_baseline_keeps_the_pipelines_tracking_store_and_its_own_outputs(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = params_from_dict({"base": {"outputs_dir": "outputs"}, "mlflow": {"tracking_uri": None}})
    overrides = baseline_overrides(params, tmp_path)
    assert overrides["model.tuning"] == "linear"
    long_run = params_from_dict({"train": {"epochs": 60}})
    assert baseline_overrides(long_run, tmp_path)["train.epochs"] == str(BASELINE_EPOCHS) == "10"
    short_run = params_from_dict({"train": {"epochs": 3}})
    assert baseline_overrides(short_run, tmp_path)["train.epochs"] == "3"
    assert overrides["base.outputs_dir"] == str(tmp_path / "outputs" / BASELINE_DIR)
    # nothing under the train stage's DVC outputs: its Ray storage is the baseline's own
    assert overrides["train.storage_path"] == str(tmp_path / "outputs" / BASELINE_DIR / "ray")
    assert not Path(overrides["train.storage_path"]).is_relative_to(tmp_path / params.train.storage_path)
    # the default store lives under the PIPELINE's outputs dir, not the baseline's
    assert str(tmp_path / "outputs") in overrides["mlflow.tracking_uri"]
    assert BASELINE_DIR not in overrides["mlflow.tracking_uri"]
