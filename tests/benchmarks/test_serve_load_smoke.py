"""benchmarks.serve_load end to end in its smallest configuration (hidden ``--smoke``: 4 requests at
1 and 2 clients): both real servers start, answer, and the report keeps the contract the docs read.
The numbers of a 4-request run mean nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import serve_load

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration  # the benchmark runs in a subprocess, with Ray Serve and mlflow models serve


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("serve-load") / "serve_load.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.serve_load", "--smoke", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), out


def test_both_servers_answer_every_request_and_the_report_keeps_its_contract(smoke: tuple[dict, Path]) -> None:
    report, out = smoke
    assert report["benchmark"] == "serve_load" and report["command"].endswith(f"--smoke --out {out}")
    points = {(p["server"], p["clients"]): p for p in report["points"]}
    assert set(points) == {(s, c) for s in ("ray_serve", "mlflow") for c in (1, 2)}
    assert all(p["ok"] == p["requests"] == 4 and p["failed"] == 0 for p in points.values())
    assert all(0 < p["p50_ms"] <= p["p95_ms"] <= p["p99_ms"] for p in points.values())
    head = report["headline"]
    ratio = points[("ray_serve", 2)]["videos_per_s"] / points[("mlflow", 2)]["videos_per_s"]
    assert head["clients"] == 2 and head["throughput_ratio"] == pytest.approx(ratio, abs=0.01)
    assert head["target_met"] is (ratio >= serve_load.TARGET_RATIO and head["ray_serve_failed_good"] == 0
                                  and head["hostile_all_4xx"])
    forward = report["forward"]
    assert forward["batch"] == 8 and forward["threads"] == 1 and forward["ms_per_video_batched"] > 0 < forward["decode_ms"]
    assert head["batching_saving"] == forward["saving"] == pytest.approx(
        forward["ms_per_video_alone"] / forward["ms_per_video_batched"], abs=0.01)
    from benchmarks.harness import shown

    assert serve_load.markdown(report, shown(out)) == out.with_suffix(".md").read_text()
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"


def test_the_mixed_run_counts_what_each_kind_got() -> None:
    """The hostile share goes where it should and the counts add up (pure: a fake server)."""
    def post(data: bytes) -> tuple[bool, int]:
        return (True, 200) if data.startswith(b"good") else (False, 415)

    got = serve_load.mixed(post, [b"good1", b"good2"], {"text": b"text", "empty": b""}, clients=3, requests=20,
                           share=0.1)
    assert (got["good"], got["hostile"]) == (18, 2)
    assert got["good_failed"] == 0 and got["hostile_4xx"] == 2 and got["hostile_statuses"] == [415]
