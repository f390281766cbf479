"""`make gpu-check` (`python -m infra.gpu_check`) and `python -m benchmarks.memory --device cuda` on a machine without CUDA.

Both need an NVIDIA GPU, which CI machines do not have.  What a user of such a machine must get
is one line saying so and a non-zero exit code, at once, with no traceback.  CUDA is hidden from
the subprocesses (``CUDA_VISIBLE_DEVICES=""``), so these tests mean the same on a GPU machine.
The GPU paths themselves are exercised by ``make gpu-check`` on a GPU (README, "GPU check").
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration  # make, the check and the benchmark run as subprocesses
NO_CUDA = "gpu-check: no CUDA device (torch.cuda.is_available() is False); run this on a machine with an NVIDIA GPU"


def _no_cuda_env() -> dict[str, str]:
    return {**os.environ, "CUDA_VISIBLE_DEVICES": ""}


def _run(cmd: list[str]) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO, env=_no_cuda_env(), capture_output=True, text=True, timeout=120)
    return proc, time.monotonic() - started


def test_make_gpu_check_without_cuda_stops_at_once_with_one_line() -> None:
    # -o: never (re)install from inside a test; PY: the interpreter running this test suite.
    proc, seconds = _run(["make", "--no-print-directory", "-o", ".venv/.installed", f"PY={sys.executable}", "gpu-check"])
    assert proc.returncode != 0
    assert "-m infra.gpu_check" in proc.stdout, "make gpu-check must run python -m infra.gpu_check"
    # make's own "make: *** ..." line (``make[N]:`` when this suite itself runs under make, as in CI)
    script_lines = [line for line in proc.stderr.splitlines() if not re.match(r"make(\[\d+\])?: \*\*\*", line)]
    assert script_lines == [NO_CUDA]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert seconds < 60, f"took {seconds:.0f}s: the no-CUDA answer must come before any work"


def test_gpu_check_script_exits_2_with_only_the_no_cuda_line() -> None:
    proc, _ = _run([sys.executable, "-m", "infra.gpu_check"])
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [NO_CUDA]


def test_memory_benchmark_cuda_without_cuda_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "memory_cuda.json"
    proc, seconds = _run([sys.executable, "-m", "benchmarks.memory", "--device", "cuda", "--out", str(out)])
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        "memory.py: --device cuda needs a CUDA device (torch.cuda.is_available() is False); "
        "run it on a machine with an NVIDIA GPU, or use --device cpu"
    ]
    assert not out.exists() and seconds < 60


def test_gpu_check_lists_its_checks_without_cuda_including_the_features_path() -> None:
    """``--list`` needs no GPU: the checks in run order, each with what it needs and one line of what it checks."""
    proc, seconds = _run([sys.executable, "-m", "infra.gpu_check", "--list"])
    assert proc.returncode == 0, proc.stderr
    rows = [line.split(maxsplit=3) for line in proc.stdout.splitlines()]
    assert [row[0] for row in rows] == ["cuda", "memory", "pipeline", "evaluate", "predict", "serve", "ray_serve", "batch_predict",
                                        "nccl",
                                        "features", "train_features", "evaluate_features"]
    needs = {row[0]: row[2] for row in rows}
    assert (needs["features"], needs["train_features"], needs["evaluate_features"]) == (
        "pipeline", "features", "train_features")
    described = {row[0]: row[3] for row in rows}
    assert "features.use_gpu: true" in described["features"] and "Ray Data" in described["features"]
    assert "train.use_gpu: true" in described["train_features"]
    assert "CUDA" in described["evaluate_features"] and "head only" in described["evaluate_features"]
    assert all(row[1] == "needs" and row[3] for row in rows) and seconds < 60
