"""benchmarks.memory_scaling on its smallest grid, and benchmarks.memory's headline built from its points.

One real run of the script (``--smoke``: ViT-tiny at 32 px, T in {2, 4}, ``madapter`` and ``full``,
four fresh child processes of benchmarks.memory) gives the JSON every other test reads: the
slopes and ratios must be the least-squares lines through its own points, the pure ``markdown`` and
``plot`` must render it, and memory.py must build its CPU headline from those points instead of
measuring them again when the file sits beside its ``--out``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
PROVENANCE_KEYS = {"command", "git", "machine", "quick", "seconds_total"}

pytestmark = pytest.mark.integration  # the benchmark runs in a subprocess


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def scaling() -> ModuleType:
    from benchmarks import memory_scaling

    return memory_scaling


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("scaling") / "memory_scaling.json"
    proc = _run("-m", "benchmarks.memory_scaling", "--smoke", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out, json.loads(out.read_text())


def test_smoke_run_writes_every_point_and_the_contract_keys(smoke: tuple[Path, dict]) -> None:
    out, report = smoke
    assert report["benchmark"] == "memory_scaling" and PROVENANCE_KEYS <= report.keys()
    assert report["command"].endswith(f"-m benchmarks.memory_scaling --smoke --out {out}")
    points = {(p["backbone"], p["frames"], p["mode"]) for p in report["points"]}
    assert points == {("vit_tiny_patch16_224", t, m) for t in (2, 4) for m in ("madapter", "full")}
    assert all(p["step_peak_mb"] > 0 and p["step_s"] > 0 for p in report["points"])
    assert (report["setup"]["warmup_steps"], report["setup"]["timed_steps"]) == (1, 1)
    assert out.with_suffix(".png").stat().st_size > 0 and out.with_suffix(".md").exists()


def test_slopes_and_verdict_are_computed_from_the_points(smoke: tuple[Path, dict]) -> None:
    _, report = smoke
    fitted = {}
    for mode in ("madapter", "full"):
        series = sorted((p["frames"], p["step_peak_mb"], p["step_s"]) for p in report["points"] if p["mode"] == mode)
        t, mb, s = (np.array(col, dtype=float) for col in zip(*series, strict=True))
        fitted[mode] = np.polyfit(t, mb, 1)[0]
        assert report["slopes"][mode]["mb_per_frame"] == pytest.approx(fitted[mode])
        assert report["slopes"][mode]["s_per_frame"] == pytest.approx(np.polyfit(t, s, 1)[0])
    # a ratio to a slope that is not positive means nothing: at the smoke size on a busy machine, full's
    # few MB per frame can come out <= 0 from allocator noise, and the code then reports no ratio
    ratio = float(fitted["madapter"] / fitted["full"]) if fitted["full"] > 0 else None
    head = report["headline"]
    if ratio is None:
        assert head["madapter_slope_ratio_to_full"] is None
        assert head["target_met"] is None and head["verdict"] == "not measured"
    else:
        assert head["madapter_slope_ratio_to_full"] == pytest.approx(ratio)
        assert head["target_met"] is (ratio <= 0.1) and head["verdict"] == ("met" if ratio <= 0.1 else "NOT met")
    small = report["by_backbone"]["vit_tiny_patch16_224"]
    by_mode = {p["mode"]: p for p in report["points"] if p["frames"] == 4}
    assert small["madapter_vs_full_memory"] == pytest.approx(by_mode["madapter"]["step_peak_mb"] / by_mode["full"]["step_peak_mb"])


def test_markdown_and_plot_are_pure_functions_of_the_json(scaling: ModuleType, smoke: tuple[Path, dict],
                                                          tmp_path: Path) -> None:
    out, report = smoke
    text = scaling.markdown(report, "benchmarks/results/memory_scaling.json")
    assert text == scaling.markdown(json.loads(out.read_text()), "benchmarks/results/memory_scaling.json")
    slope = report["slopes"]["full"]["mb_per_frame"]
    assert f"| `full` | {slope:.1f} | {'1.000x' if slope > 0 else '-'} |" in text
    assert f"**{report['headline']['verdict']}**" in text
    assert text.rstrip().splitlines()[-1] == (
        f"Source: `benchmarks/results/memory_scaling.json`, written by `{report['command']}`.")
    scaling.plot(report, tmp_path / "plot.png")
    assert (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"


def test_a_failed_point_is_recorded_and_the_rest_still_analysed(scaling: ModuleType, smoke: tuple[Path, dict]) -> None:
    _, report = smoke
    broken = json.loads(json.dumps(report))
    point = next(p for p in broken["points"] if p["mode"] == "full" and p["frames"] == 2)
    point.clear()
    point.update(backbone="vit_tiny_patch16_224", frames=2, mode="full", error="exit 1: MemoryError")
    analysed = scaling.analyse(broken)
    assert analysed["slopes"]["full"]["mb_per_frame"] is None and analysed["headline"]["verdict"] == "not measured"
    assert "failed: exit 1: MemoryError" in scaling.markdown(analysed, "x.json")


def test_memory_headline_reuses_the_scaling_points(smoke: tuple[Path, dict], tmp_path: Path) -> None:
    """memory.py beside a memory_scaling.json of this commit and setting builds its table from it, measuring nothing."""
    _, report = smoke
    at4 = {p["mode"]: p for p in report["points"] if p["frames"] == 4}
    extra = [{**at4[src], "mode": mode} for mode, src in (("inserted", "full"), ("linear", "madapter"))]
    (tmp_path / "memory_scaling.json").write_text(json.dumps({**report, "points": report["points"] + extra}))
    out = tmp_path / "memory.json"
    proc = _run("-m", "benchmarks.memory", "--backbone", "vit_tiny_patch16_224", "--img-size", "32", "--frames", "4",
                "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "measuring" not in proc.stderr and "reusing" in proc.stderr
    headline = json.loads(out.read_text())
    assert headline["benchmark"] == "memory" and PROVENANCE_KEYS <= headline.keys()
    assert headline["setup"]["measured_by"] == report["command"]
    full, madapter = at4["full"]["step_peak_mb"], at4["madapter"]["step_peak_mb"]
    assert headline["ratios"]["madapter_vs_full"]["step_peak_memory"] == pytest.approx(madapter / full)
    assert headline["targets"]["madapter_vs_full.step_peak_memory"]["met"] is (madapter / full <= 0.15)
    md = out.with_suffix(".md").read_text()
    assert f"(points measured by `{report['command']}`)" in md and out.with_suffix(".png").stat().st_size > 0


def test_bad_arguments_are_one_line_and_exit_2(tmp_path: Path) -> None:
    proc = _run("-m", "benchmarks.memory_scaling", "--out", str(tmp_path / "x.txt"))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [f"memory_scaling.py: argument --out: must end in .json, got {tmp_path / 'x.txt'} (see --help)"]


def test_the_features_child_feeds_the_head_what_the_features_stage_stores() -> None:
    """``madapter-features`` inputs: extract's level and pooled shapes, float16-rounded values fed as float32."""
    import argparse

    import torch

    from benchmarks import memory
    from madapter.config import ModelSection
    from madapter.models.build import build_model

    args = argparse.Namespace(backbone="vit_tiny_patch16_224", img_size=32, frames=2, batch=2, width=16, temporal="conv")
    model, _, (levels, pooled), y, backbone_params = memory.build_features(args)
    full = build_model(ModelSection(backbone=args.backbone, img_size=32, num_frames=2, width=16), num_classes=400)
    with torch.no_grad():
        stored = full.extract(torch.randn(2, 2, 3, 32, 32))
    assert [lvl.shape for lvl in levels] == [lvl.shape for lvl in stored.levels]
    assert pooled.shape == stored.pooled.shape and y.shape == (2,)
    for tensor in (*levels, pooled):
        assert tensor.dtype == torch.float32 and torch.equal(tensor, tensor.half().float())
    assert not hasattr(model, "backbone") and backbone_params == sum(p.numel() for p in full.backbone.parameters())
    assert model(levels, pooled).shape == (2, 400)


def test_a_full_slope_that_is_not_positive_gives_no_ratio_and_no_verdict(scaling: ModuleType,
                                                                         smoke: tuple[Path, dict]) -> None:
    """The guard the noisy smoke run may or may not reach, forced: full's memory shrinking with T."""
    _, report = smoke
    report = json.loads(json.dumps(report))
    for point in report["points"]:
        if point["mode"] == "full":
            point["step_peak_mb"] = 500.0 - point["frames"]
    analysed = scaling.analyse(report)
    assert analysed["slopes"]["full"]["mb_per_frame"] == pytest.approx(-1.0)
    assert analysed["slopes"]["madapter"]["ratio_to_full"] is None
    assert analysed["headline"]["verdict"] == "not measured" and analysed["headline"]["target_met"] is None
    assert "| `full` | -1.0 | - |" in scaling.markdown(analysed, "x.json")
