"""The GPU memory benchmark's report, built from the records its child processes print.

No GPU is needed to check what happens *after* the measurement: a mode that ran out of memory
must be recorded as OOM with the GPU's size (not crash the report), ratios against it are left
out, and the target verdict uses the strictest reading of the published 12.7 GB.  The records
below have exactly the shape ``measure_cuda`` prints (see benchmarks.memory).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from benchmarks.harness import write_outputs

REPO = Path(__file__).resolve().parents[2]
GIB = 2**30


@pytest.fixture(scope="module")
def memory() -> ModuleType:
    from benchmarks import memory

    return memory


def _measured(mode: str, gb: float) -> dict:
    return {"mode": mode, "gpu": "NVIDIA A10", "gpu_total_bytes": 24 * GIB, "branch_amp": "bf16", "oom": False,
            "peak_bytes": int(gb * GIB), "peak_gb": gb, "step_s": 0.5, "step_s_all": [0.5]}


def _oom(mode: str) -> dict:
    return {"mode": mode, "gpu": "NVIDIA A10", "gpu_total_bytes": 24 * GIB, "branch_amp": "bf16", "oom": True,
            "error": "CUDA out of memory. Tried to allocate 2.00 GiB"}


def test_cuda_defaults_are_the_published_setting(memory: ModuleType) -> None:
    args = memory.BENCHMARK.parse_args(["--device", "cuda"])
    assert (args.backbone, args.frames, args.img_size, args.batch) == ("vit_base_patch16_224", 8, 224, 32)
    assert args.out.name == "memory_cuda.json"
    cpu = memory.BENCHMARK.parse_args([])
    assert (cpu.batch, cpu.repeats, cpu.steps, cpu.img_size, cpu.out.name) == (2, 1, 1, 224, "memory.json")
    assert memory.BENCHMARK.parse_args(["--quick"]).img_size == memory.QUICK_IMG_SIZE  # the CPU figures' setting, reduced


def test_an_oom_mode_is_a_result_not_a_crash(memory: ModuleType, tmp_path: Path) -> None:
    args = memory.BENCHMARK.parse_args(["--device", "cuda", "--out", str(tmp_path / "memory_cuda.json")])
    runs = {"madapter": [_measured("madapter", 4.2)], "inserted": [_measured("inserted", 20.0)],
            "linear": [_measured("linear", 2.0)], "full": [_oom("full")]}
    report = memory.summarize_cuda(runs, args)
    assert report["modes"]["full"]["oom"] and report["setup"]["gpu_total_gb"] == pytest.approx(24.0)
    assert report["ratios"]["madapter_vs_full.peak"] is None
    assert report["ratios"]["madapter_vs_inserted.peak"] == pytest.approx(0.21)
    assert report["target"] == {"madapter_peak_below_gb": 12.7, "met": True}
    assert report["published_gb"]["DiST"] == 12.7 and report["published_gb"]["AIM"] == 35.2

    report["command"] = ".venv/bin/python benchmarks/memory.py --device cuda"
    write_outputs(report, args.out, memory.plot, memory.markdown)
    assert json.loads(args.out.read_text())["modes"]["full"]["oom"] is True
    table = args.out.with_suffix(".md").read_text()
    assert table.rstrip().splitlines()[-1] == (
        f"Source: `{args.out}`, written by `.venv/bin/python benchmarks/memory.py --device cuda`.")
    assert "| `full` (measured) | yes (all weights) | OOM (GPU has 24.0 GB) | - |" in table
    assert "| `madapter` (measured) | no | 4.20 GB | 0.500 s |" in table
    assert "Target `madapter` < 12.7 GB (DiST): **met**." in table
    assert args.out.with_suffix(".png").stat().st_size > 0


def test_target_is_judged_in_the_strictest_unit(memory: ModuleType) -> None:
    """12.2 GiB is 13.1e9 bytes: under 12.7 if the table meant GiB, over it if it meant 10^9 bytes -> not met."""
    args = memory.BENCHMARK.parse_args(["--device", "cuda"])
    runs = {m: [_measured(m, 12.2 if m == "madapter" else 1.0)] for m in memory.MODES}
    assert memory.summarize_cuda(runs, args)["target"]["met"] is False
    runs["madapter"] = [_oom("madapter")]
    report = memory.summarize_cuda(runs, args)
    assert report["target"]["met"] is None and "**not measured**" in memory.markdown_cuda(report)
