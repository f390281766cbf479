"""benchmarks.decode end to end in its smallest configuration (hidden ``--smoke``: 2 tiny videos
per GOP), so the script cannot rot and keeps the contract ``make bench`` and the report generator
rely on: the provenance keys, the ``headline`` the docs quote, and the JSON + PNG + table triple
whose table names the JSON and the exact command.  The numbers of a 2-video run mean nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import decode

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration  # the benchmark runs in a subprocess


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """One ``--smoke`` run in a fresh process."""
    out = tmp_path_factory.mktemp("decode-bench") / "decode.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.decode", "--smoke", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), out


def test_the_report_carries_provenance_and_the_headline(smoke: tuple[dict, Path]) -> None:
    report, out = smoke
    assert report["benchmark"] == "decode" and report["quick"] is False
    assert report["command"].endswith(f"-m benchmarks.decode --smoke --out {out}")
    assert len(report["git"]["commit"]) == 40 and report["seconds_total"] > 0
    assert {"decord", "av"} <= set(report["machine"]["versions"]) and "load_avg_1m_start" in report["machine"]
    assert report["settings"]["configuration"] == "smoke"
    rows = report["results"]
    assert [r["gop"] for r in rows] == report["settings"]["gops"]
    for r in rows:
        assert r["decord_clips_per_s"] > 0 and r["pyav_clips_per_s"] > 0
        assert r["speedup"] == pytest.approx(r["decord_clips_per_s"] / r["pyav_clips_per_s"], rel=0.02)
        assert r["mean_abs_pixel_diff"] < 1  # both paths return the same frames
    head = report["headline"]
    assert head["speedup_by_gop"] == {str(r["gop"]): r["speedup"] for r in rows}
    assert head["min_speedup"] == min(r["speedup"] for r in rows)
    assert head["target_met"] == (head["min_speedup"] >= head["target_speedup"] == 2.0)


def test_plot_and_table_are_written_beside_the_json(smoke: tuple[dict, Path]) -> None:
    report, out = smoke
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = out.with_suffix(".md").read_text()
    assert f"**{report['results'][0]['speedup']:.2f}x**" in table
    assert table.rstrip().splitlines()[-1].startswith(f"From `{out}`") and f"`{report['command']}`" in table


def test_a_failed_point_is_a_row_not_a_crash(smoke: tuple[dict, Path], tmp_path: Path) -> None:
    """The pure functions on the run's JSON with one GOP failed: the table says so, the verdict is not met."""
    report, _ = smoke
    rows = [report["results"][0], {"gop": 99, "error": "RuntimeError: cannot open gop99_00.mp4"}]
    broken = {**report, "results": rows, "headline": decode.headline(rows)}
    assert broken["headline"]["target_met"] is False
    assert "| 99 | failed: RuntimeError: cannot open gop99_00.mp4 |" in decode.markdown(broken, "x.json")
    decode.plot(broken, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0


def test_a_bad_flag_is_one_line_and_exit_2() -> None:
    proc = subprocess.run([sys.executable, "-m", "benchmarks.decode", "--out", "decode.txt"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "--out" in proc.stderr
