"""benchmarks.feature_cache end to end in its smallest configuration (``--smoke``), so the script
cannot rot: it runs the real data stages, the real features stage on a real local Ray (Ray Data),
two real Ray Train runs (online and cached) logging to a scratch MLflow store, and the two
step-memory processes, then writes the JSON, the plot and the docs table.  The numbers of a
2-clip run mean nothing; what is checked is that every field the docs table and plot read is
there, sane and consistent with the run (same views both ways, the cached worker without backbone).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import feature_cache

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, float]:
    """One ``--smoke`` run in a fresh process (its own local Ray, shut down when it exits)."""
    out = tmp_path_factory.mktemp("feature-cache") / "feature_cache.json"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "benchmarks.feature_cache", "--smoke", "--out", str(out),
                           "-S", "model.width=24"], cwd=REPO,
                          env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=600)
    seconds = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), out, seconds


def test_the_report_has_every_field_the_docs_read(smoke: tuple[dict, Path, float]) -> None:
    report, out, _ = smoke
    assert report["benchmark"] == "feature_cache"
    assert report["command"].endswith(f"-m benchmarks.feature_cache --smoke --out {out} -S model.width=24")
    assert report["setup"]["width"] == 24  # -S applies after the smoke configuration (width 32)
    assert len(report["git"]["commit"]) == 40 and isinstance(report["git"]["dirty"], bool)
    assert report["quick"] is False and report["seconds_total"] > 0 and report["errors"] == {}
    machine = report["machine"]
    assert machine["cpus"] >= 1 and {"torch", "timm", "ray"} <= set(machine["versions"])
    assert {"load_avg_1m_start", "load_avg_1m_end", "python", "platform"} <= set(machine)
    assert report["setup"]["configuration"] == "smoke" and report["setup"]["omp_wait_policy"] == "PASSIVE"

    training = report["training"]
    for run in (training["online"], training["cached"]):
        assert run["epoch_time_s"] > 0 and run["clips_per_s"] > 0 and run["worker_peak_rss_mb"] > 100
        assert run["epochs"] == report["setup"]["epochs"]
    assert training["speedup_epoch"] == pytest.approx(training["online"]["epoch_time_s"] / training["cached"]["epoch_time_s"])
    assert training["target_speedup"] == 10.0 and training["target_met"] == (training["speedup_epoch"] >= 10.0)
    assert "break_even_epochs" in training
    # The same views in the same order from the same initial head: the cached run repeats the online one.
    assert training["train_loss_max_abs_diff"] < 1e-2


def test_the_headline_holds_the_numbers_the_docs_prose_quotes(smoke: tuple[dict, Path, float]) -> None:
    report, _, _ = smoke
    head, training = report["headline"], report["training"]
    assert head["speedup_epoch"] == training["speedup_epoch"] and head["target_met"] == training["target_met"]
    assert head["online_ms_per_clip"] == pytest.approx(1e3 / training["online"]["clips_per_s"])
    assert head["frozen_forward_ms_per_clip"] == pytest.approx(head["online_ms_per_clip"] - head["cached_ms_per_clip"])
    assert head["worker_parameters_m"]["cached"] < head["worker_parameters_m"]["online"]
    assert head["features_stage_s"] == report["extraction"]["ray_data"]["seconds"]
    assert report["setup"]["tokens_per_frame"] == (report["setup"]["img_size"] // 16) ** 2


def test_both_sides_measure_the_same_work(smoke: tuple[dict, Path, float]) -> None:
    report, _, _ = smoke
    memory = report["step_memory"]
    online, cached = memory["online"], memory["cached"]
    assert (online["model"], cached["model"]) == ("VideoClassifier", "FeatureClassifier")
    assert cached["parameters"] < online["parameters"]  # the cached worker holds no backbone
    assert online["clips_trained"] == cached["clips_trained"] > 0
    for side in (online, cached):
        assert side["peak_rss_mb"] >= side["rss_before_mb"] > 100 and side["step_added_mb"] >= 0
        assert side["torch_threads"] == 1  # as a Ray Train worker with train.cpus_per_worker 1
    assert memory["ratio_added"] == pytest.approx(cached["step_added_mb"] / online["step_added_mb"])

    extraction = report["extraction"]
    ray_data, plain = extraction["ray_data"], extraction["plain_loop"]
    assert ray_data["views"] == plain["views"] == sum(ray_data["views_per_split"].values()) > 0
    assert extraction["plain_loop_matches_stored"] is True
    assert ray_data["first_batch_s"] > 0 and plain["first_batch_s"] > 0 and ray_data["bytes"] > 0
    assert extraction["ratio_ray_data_vs_plain"] == pytest.approx(ray_data["views_per_s"] / plain["views_per_s"])


def test_plot_and_docs_table_are_written_beside_the_json(smoke: tuple[dict, Path, float]) -> None:
    report, out, _ = smoke
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = out.with_suffix(".md").read_text()
    assert f"{report['training']['online']['epoch_time_s']:.2f} s" in table
    assert f"From `{out}`, commit `{report['git']['commit'][:10]}`" in table
    assert table.rstrip().splitlines()[-1].startswith(f"From `{out}`") and f"`{report['command']}`" in table


def test_a_failed_part_is_reported_not_a_crash(smoke: tuple[dict, Path, float], tmp_path: Path) -> None:
    """The pure functions on a report whose cached training run failed: a table of errors and the footer."""
    report, _, _ = smoke
    broken = {**report, "errors": {"training (features)": "RayTaskError: worker died"}, "headline": None}
    table = feature_cache.markdown(broken, "x.json")
    assert "| training (features) | RayTaskError: worker died |" in table
    assert table.rstrip().splitlines()[-1].startswith("From `x.json`")
    feature_cache.plot(broken, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
