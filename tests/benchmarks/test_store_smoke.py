"""benchmarks.store end to end in its smallest configuration (``--smoke``), so the script cannot
rot: it generates both video sets, decodes them with the decode stage's function, writes both
store formats with the real writer, times the three loaders and the codec table, and writes the
JSON, the plot and the docs table.  The numbers of a 4-video run mean nothing; what is checked is
that every field the docs table and plot read is there, sane and consistent with the run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import store

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration  # the benchmark runs in a subprocess


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """One ``--smoke`` run in a fresh process."""
    out = tmp_path_factory.mktemp("store-bench") / "store.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.store", "--smoke", "--out", str(out)], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), out


def test_the_report_has_every_field_the_docs_read(smoke: tuple[dict, Path]) -> None:
    report, out = smoke
    assert report["benchmark"] == "store" and report["command"].endswith(f"-m benchmarks.store --smoke --out {out}")
    assert len(report["git"]["commit"]) == 40 and isinstance(report["git"]["dirty"], bool)
    assert report["quick"] is False and report["seconds_total"] > 0 and report["errors"] == {}
    assert {"simplejpeg", "decord", "torch"} <= set(report["machine"]["versions"])
    setup = report["setup"]
    assert setup["configuration"] == "smoke" and setup["videos_per_set"] == 4
    assert set(report["sets"]) == {"natural", "synthetic"}
    for res in report["sets"].values():
        raw, jpeg = res["bytes_per_video"]["raw"], res["bytes_per_video"]["jpeg"]
        assert raw > res["uint8_bytes_per_video"] > jpeg > 0  # raw: the frames plus the .npy header
        assert res["size_ratio_jpeg_vs_raw"] == pytest.approx(jpeg / raw)
        assert 0 < res["pixel_error"]["mae"] < 5 and res["pixel_error"]["psnr_db"] > 25
        loaders = {"raw", "jpeg", *(f"decord {label}" for label in res["encodings"])}
        assert set(res["throughput"]) == loaders
        for speed in res["throughput"].values():
            assert speed["clip"]["clips_per_s"] > 0 and speed["frames"]["clips_per_s"] > 0
        fastest = max(res["throughput"][f"decord {label}"]["clip"]["clips_per_s"] for label in res["encodings"])
        assert res["speedup_jpeg_vs_decord"] == pytest.approx(res["throughput"]["jpeg"]["clip"]["clips_per_s"] / fastest)
        ucf = res["projected_gb"]["UCF101"]
        assert ucf["raw"] == pytest.approx(raw * 13_320 / 1e9) and ucf["jpeg"] < ucf["raw"]
    targets = report["targets"]
    assert targets["size_met"] == (report["sets"]["natural"]["size_ratio_jpeg_vs_raw"] <= 1 / 8)


def test_the_headline_holds_the_numbers_the_docs_prose_quotes(smoke: tuple[dict, Path]) -> None:
    report, _ = smoke
    nat, head = report["sets"]["natural"], report["headline"]
    tp = nat["throughput"]
    assert head["jpeg_size_fraction"] == pytest.approx(1 / nat["size_ratio_jpeg_vs_raw"])
    assert head["jpeg_vs_raw_clip_rate"] == pytest.approx(tp["jpeg"]["clip"]["clips_per_s"] / tp["raw"]["clip"]["clips_per_s"])
    assert head["jpeg_decode_ms_per_clip"] == pytest.approx(
        1e3 / tp["jpeg"]["frames"]["clips_per_s"] - 1e3 / tp["raw"]["frames"]["clips_per_s"])
    assert head["clip_transform_ms"] > 0 and head["source_h264_mae"] == nat["source_codec_error"]["mae"]
    assert head["projected_gb"]["UCF101"]["jpeg"] == nat["projected_gb"]["UCF101"]["jpeg"]
    codecs = head["codecs"]
    assert codecs["store_codec"].startswith("simplejpeg") and codecs["store_codec"].endswith("q90")
    webp = codecs["webp_closest_error"]
    assert webp["quality"] == 90 and webp["bytes_vs_store"] > 0 and webp["decode_time_vs_store"] > 0


def test_a_failed_set_is_reported_not_a_crash(smoke: tuple[dict, Path], tmp_path: Path) -> None:
    """The pure functions on the run's JSON with the synthetic set failed, then the natural one too."""
    report, _ = smoke
    failed = {"error": "RuntimeError: no space left on device"}
    broken = {**report, "sets": {**report["sets"], "synthetic": failed}, "errors": {"set synthetic": failed["error"]}}
    table = store.markdown(broken, "x.json")
    assert "| failed: RuntimeError: no space left on device | synthetic |" in table
    assert "Failed: set synthetic: RuntimeError" in table and "UCF101" in table
    store.plot(broken, tmp_path / "a.png")
    no_natural = {**broken, "sets": {"natural": failed, "synthetic": failed}, "headline": None}
    assert store.markdown(no_natural, "x.json").rstrip().splitlines()[-1].startswith("From `x.json`")
    store.plot(no_natural, tmp_path / "b.png")


def test_the_codec_table_compares_libraries_on_the_same_frames(smoke: tuple[dict, Path]) -> None:
    report, _ = smoke
    rows = report["codecs"]
    libraries = {row["library"].split()[0] for row in rows}
    assert {"simplejpeg", "Pillow"} <= libraries and {row["set"] for row in rows} == {"natural", "synthetic"}
    store_codec = [row for row in rows if row["note"] == "the store's codec"]
    assert store_codec and all(row["codec"] == "JPEG 4:2:0" and row["quality"] == 90 for row in store_codec)
    for row in rows:
        assert row["bytes_per_frame"] > 0 and row["decode_ms_per_frame"] > 0 and row["mae"] >= 0
    assert "torchcodec" in report["codecs_not_measured"]


def test_plot_and_docs_table_are_written_beside_the_json(smoke: tuple[dict, Path]) -> None:
    report, out = smoke
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = out.with_suffix(".md").read_text()
    jpeg = report["sets"]["natural"]["throughput"]["jpeg"]["clip"]["clips_per_s"]
    assert f"**{jpeg:.1f}**" in table and "Kinetics-400 (train), 240,000 videos" in table
    assert f"From `{out}`, commit `{report['git']['commit'][:10]}`" in table
    assert table.rstrip().splitlines()[-1].startswith(f"From `{out}`") and f"`{report['command']}`" in table
