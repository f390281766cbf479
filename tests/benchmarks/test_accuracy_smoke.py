"""benchmarks.accuracy and benchmarks.ablations end to end in their tiny configuration
(``--smoke``: 2 classes x 6 videos at 32 px, 1 epoch, 2 seeds), so neither script can rot: the real
data stages make both synthetic sets, the features stage's extractor caches the views once, every
tuning mode trains through the pipeline's model, epoch and optimiser, and the JSON, plot and docs
table are written.  The accuracies of such a run mean nothing; what is checked is that every field
the docs read is there and consistent, and that the pure ``plot``/``markdown`` reproduce the files.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PNG = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.integration  # the benchmark runs in a subprocess


def _run(name: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *extra, "--out", str(out)], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict, Path]]:
    """One ``--smoke`` run of each script, in this process's place (``--processes 1``: no spawn cost)."""
    out_dir = tmp_path_factory.mktemp("accuracy-bench")
    found = {}
    for name in ("accuracy", "ablations"):
        out = out_dir / f"{name}.json"
        proc = _run(name, out, "--smoke", "--processes", "1")
        assert proc.returncode == 0, proc.stderr[-3000:]
        found[name] = (json.loads(out.read_text()), out)
    return found


@pytest.fixture(scope="module")
def modules() -> dict[str, object]:
    return {name: importlib.import_module(f"benchmarks.{name}") for name in ("accuracy", "ablations")}


def test_accuracy_covers_every_mode_on_both_sets(reports: dict) -> None:
    report, out = reports["accuracy"]
    assert report["benchmark"] == "accuracy" and report["command"].endswith(f"--smoke --processes 1 --out {out}")
    assert len(report["git"]["commit"]) == 40 and report["quick"] is False and report["errors"] == []
    assert report["classes"] == {"order": ["move_right", "move_left"], "appearance": ["ell_red", "tee_green"]}
    assert len(report["runs"]) == 2 * 4 * 2 + 2  # sets x modes x seeds, and madapter's old schedule on the order set
    groups = {tuple(s["group"]): s for s in report["summary"]}
    assert set(groups) == {(t, m) for t in ("order", "appearance") for m in ("madapter", "inserted", "full", "linear")
                           } | {("order", "madapter (before)")}
    before = [r for r in report["runs"] if r.get("label") == "madapter (before)"]
    assert {r["overrides"]["train.warmup_epochs"] for r in before} == {0.5} and {r["seed"] for r in before} == {0, 1}
    head = report["headline"]
    assert head["order_seeds"] == [0, 1] and head["seed_spread_target"] == 0.05
    by_run = {(r.get("label", r["tuning"]), r["seed"]): r["test_top1"] for r in report["runs"] if r["set"] == "order"}
    assert head["order_per_seed"] == {label: [by_run[label, 0], by_run[label, 1]]
                                      for label in ("madapter (before)", "madapter", "inserted")}
    assert isinstance(report["headline"]["madapter_meets_seed_target"], bool)
    for s in groups.values():
        assert s["n"] == 2 and 0 <= s["top1_mean"] <= 1 and s["top1_std"] >= 0 and s["seconds_mean"] >= 0
        assert list(s["per_pair_mean"]) in (["move_right/move_left"], ["ell_red/tee_green"])
    params = {m: groups[("order", m)]["trainable_params"] for m in ("linear", "madapter", "inserted", "full")}
    assert params["linear"] < params["madapter"] and params["inserted"] < params["full"]
    assert params["full"] > 5_000_000  # the whole ViT-Ti trains
    head = report["headline"]
    assert head["pairs"] == 1 and isinstance(head["order_set_separates_modes"], bool)
    assert head["order_verdict"] in ("madapter better", "full better", "no clear difference")
    assert set(head["seconds_per_run"]) == {"madapter", "inserted", "full", "linear"}
    assert report["data_cost"]["order"]["depth"] == 12


def test_ablations_cover_every_axis_on_both_sets_with_one_shared_baseline(reports: dict) -> None:
    report, _ = reports["ablations"]
    assert report["benchmark"] == "ablations" and report["errors"] == []
    assert list(report["axes"]) == ["levels", "temporal", "fusion", "width", "temporal block", "grid", "frozen CLS",
                                    "schedule", "frame sampling", "init"]
    assert [len(v) for v in report["axes"].values()] == [4, 5, 3, 3, 2, 2, 2, 5, 2, 2]
    assert report["sets"] == ["order", "textured"]
    groups = {tuple(s["group"]): s for s in report["summary"]}
    configs_per_set = 1 + 3 + 4 + 2 + 2 + 1 + 1 + 1 + 4 + 1 + 1
    assert len(groups) == 2 * configs_per_set and len(report["runs"]) == 2 * len(groups)  # 2 seeds
    # the frame-sampling ablation trains on a second extraction of each set: the same frames in every view
    assert {r["set"] for r in report["runs"] if r["config"] == "set=fixed"} == {"order-fixed", "textured-fixed"}
    assert report["set_setups"]["order-fixed"]["fixed_train_frames"] is True
    assert report["set_setups"]["textured"]["task"] == "textured" and report["data_cost"]["textured"]["depth"] == 12
    for data in report["sets"]:
        configs = {g[1]: s for g, s in groups.items() if g[0] == data}
        levels = {tuple(r["levels"]) for r in report["runs"] if r["base_set"] == data}
        assert levels == {(11,), (5, 11), (2, 5, 8, 11), tuple(range(12))}  # subsets of ONE extraction
        base = configs[report["baseline"]]["trainable_params"]
        assert configs["width=48"]["trainable_params"] < base < configs["width=144"]["trainable_params"]
        head = report["headline"][data]
        assert head["baseline_top1_mean"] == configs[report["baseline"]]["top1_mean"]
        assert set(head["temporal"]["minus_baseline"]) == {label for label, _ in report["axes"]["temporal"]}
        # the variants the package has no setting for are model edits: the conv + GELU + projection block has
        # no MLP (fewer weights); the attention re-drawn at the old init and the other init keep the same weights
        assert configs["edit=temporal_conv_act_proj"]["trainable_params"] < base
        before, now = configs["temporal=attention, edit=attention_position_init_0.02"], configs["temporal=attention"]
        assert before["trainable_params"] == now["trainable_params"]
        relative = configs["temporal=attention, edit=attention_relative_bias"]["trainable_params"]
        assert relative - now["trainable_params"] == 4 * 1 * 4 * 4  # levels x heads x T x T biases
        assert configs["edit=pytorch_default_init"]["trainable_params"] == base
        assert configs["level_pool=2"]["trainable_params"] == base  # pooling the grid adds no weight
        assert configs["use_cls=False"]["trainable_params"] < base


@pytest.mark.parametrize("name", ["accuracy", "ablations"])
def test_pure_outputs_reproduce_the_written_files(name: str, reports: dict, modules: dict, tmp_path: Path) -> None:
    report, out = reports[name]
    module = modules[name]
    assert out.with_suffix(".png").read_bytes().startswith(PNG)
    table = module.markdown(report, str(out))
    assert table == out.with_suffix(".md").read_text()
    assert table == module.markdown(report, str(out))  # deterministic
    assert table.rstrip().splitlines()[-1] == f"From `{out}`, command `{report['command']}`."
    module.plot(report, tmp_path / "again.png")
    assert (tmp_path / "again.png").read_bytes().startswith(PNG)


def test_a_bad_flag_is_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = _run("accuracy", tmp_path / "a.json", "--processes", "0")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "--processes" in proc.stderr
