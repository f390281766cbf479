"""``python -m benchmarks.recipe_sweep`` (the demo recipe's evidence) runs end to end on real cached features."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_recipe_sweep_writes_one_scored_row_per_recipe(extracted, tmp_path: Path) -> None:
    params, _ = extracted
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params.model_dump(mode="json")))
    recipes = [
        {"name": "pooled", "train.epochs": 2, "model.level_pool": 1, "model.width": 16},
        {"name": "one view", "group": "tiny", "train.epochs": 1, "model.width": 16, "base.seed": 1,
         "features.train_views": 1},
    ]
    out = tmp_path / "sweep.json"

    proc = subprocess.run([sys.executable, "-m", "benchmarks.recipe_sweep", "--params", str(params_file), "--out", str(out),
                           "--recipes", json.dumps(recipes)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]

    report = json.loads(out.read_text())
    assert [row["recipe"]["name"] for row in report["results"]] == ["pooled", "one view"]
    for row, epochs in zip(report["results"], (2, 1), strict=True):
        assert len(row["train_acc"]) == epochs
        assert 0.0 <= row["test_top1"] <= 1.0 and 0.0 <= row["val_top1"] <= 1.0
        assert list(row["test_per_pair"]) == ["move_right/move_left"]  # 2 classes: one reversal pair
    assert report["data"]["train_views"] == params.features.train_views
    table = out.with_suffix(".md").read_text()
    assert "| pooled |" in table and "| one view |" in table

    # --resume keeps the rows already written and trains only the new recipe (here in a worker process)
    more = [*recipes, {"name": "third", "group": "tiny", "train.epochs": 1, "model.width": 16}]
    proc = subprocess.run([sys.executable, "-m", "benchmarks.recipe_sweep", "--params", str(params_file), "--out", str(out),
                           "--recipes", json.dumps(more), "--resume", "--processes", "2"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    resumed = json.loads(out.read_text())
    assert resumed["results"][:2] == report["results"] and resumed["results"][2]["recipe"]["name"] == "third"
    assert "1 of 3 recipes to train" in proc.stderr
    # rows sharing a group are one recipe over seeds: mean +- std of their test top-1
    tops = [row["test_top1"] for row in resumed["results"][1:]]
    summary = next(line for line in out.with_suffix(".md").read_text().splitlines() if line.startswith("| tiny (2 seeds) |"))
    assert f"| {min(tops):.3f} |" in summary and "pooled" not in summary
