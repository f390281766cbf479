"""benchmarks.train_scaling's pure half on the checked-in result (a real run's JSON).

The script itself starts a real Ray Train run per point (~25 s each), too slow for the suite, so
what is tested here is what the report generator relies on: the JSON written by the last run
has the contract's keys, its ``headline`` is what the rows give, and ``markdown`` / ``plot``
render it (and a failed point) without I/O beyond the PNG.  ``make bench`` regenerates the JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
RESULT = REPO / "benchmarks" / "results" / "train_scaling.json"


@pytest.fixture(scope="module")
def module() -> Any:
    from benchmarks import train_scaling

    return train_scaling


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return json.loads(RESULT.read_text())


def test_the_checked_in_result_has_the_contract_keys(report: dict[str, Any]) -> None:
    assert report["benchmark"] == "train_scaling"
    assert {"command", "git", "machine", "quick", "seconds_total"} <= set(report)
    # The checked-in result predates the package (benchmarks/train_scaling.py); a new run records -m.
    assert any(entry in report["command"] for entry in ("benchmarks/train_scaling.py", "-m benchmarks.train_scaling"))
    assert len(report["git"]["commit"]) == 40
    assert {"ray", "torch"} <= set(report["machine"]["versions"])
    assert [[r["tuning"], r["workers"]] for r in report["rows"]] == report["settings"]["points"]


def test_the_headline_is_what_the_rows_give(module: Any, report: dict[str, Any]) -> None:
    assert module.headline(report["rows"]) == report["headline"]
    rows = {(r["tuning"], r["workers"]): r for r in report["rows"]}
    head = report["headline"]
    assert head["speedup_vs_full_1_worker"]["madapter"] == pytest.approx(
        rows[("madapter", 1)]["clips_per_s"] / rows[("full", 1)]["clips_per_s"], abs=1e-3)
    for mode in {tuning for tuning, workers in rows if workers == 2}:  # the full run has every mode on 2 workers
        assert head["two_vs_one_worker_total"][mode] == pytest.approx(
            rows[(mode, 2)]["clips_per_s"] / rows[(mode, 1)]["clips_per_s"], abs=1e-3)
        assert head["two_workers_help"][mode] == (head["two_vs_one_worker_total"][mode] > 1)


def test_table_and_plot_render_it_and_a_failed_point(module: Any, report: dict[str, Any], tmp_path: Path) -> None:
    table = module.markdown(report, "benchmarks/results/train_scaling.json")
    first = report["rows"][0]
    assert f"| {first['tuning']} | {first['workers']} | {first['clips_per_s']:.1f} |" in table
    assert table.rstrip().splitlines()[-1].startswith("From `benchmarks/results/train_scaling.json`")
    assert f"`{report['command']}`" in table
    rows = [*(r for r in report["rows"] if (r["tuning"], r["workers"]) != ("full", 1)),
            {"tuning": "full", "workers": 1, "error": "RayTaskError: worker died"}]
    broken = {**report, "rows": rows, "headline": module.headline(rows)}
    assert broken["headline"]["failed_points"] == 1 and "full" not in broken["headline"]["speedup_vs_full_1_worker"]
    assert "| full | 1 | failed: RayTaskError: worker died |" in module.markdown(broken, "x.json")
    module.plot(broken, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
