"""Training throughput and peak memory per Ray worker: 1 vs 2 CPU workers, for every tuning mode.

The real train stage (Ray Train, gloo, per-epoch checkpoints, MLflow to a scratch store) on a tiny
synthetic set, per (tuning, workers) point, reading what the workers log: clips/s (all workers)
and the hungriest worker's peak RSS, medians of epochs 2..N (the first warms up; a neighbour's
burst hits single epochs).  A 2-core shared box, random-init ViT-Ti at 32 px: compare modes and
worker counts with each other, not with GPU numbers.  Ray Train's start-up (~20 s) is most of a
point's wall time, hence few, short points.

    .venv/bin/python -m benchmarks.train_scaling          # ~4 min; benchmarks/results/train_scaling.{json,png,md}
    .venv/bin/python -m benchmarks.train_scaling --quick  # ~1 min: madapter and full on 1 worker only
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmarks.harness import Benchmark, attempt, data_stages, isolate, page, pyplot, save, table
from madapter.config import Params, params_from_dict

logger = logging.getLogger("benchmarks.train_scaling")
MODES = ("madapter", "linear", "inserted", "full")
FROZEN, BACKPROP = ("madapter", "linear"), ("inserted", "full")
"""Modes whose gradient stops at the frozen backbone, and modes that backpropagate through it."""
RAY_CPUS = 2
PROFILES: dict[str, dict[str, Any]] = {
    "full": {"points": [[mode, workers] for mode in MODES for workers in (1, 2)], "epochs": 4, "classes": 4,
             "videos_per_class": 12},
    # Same data and epochs; the frozen-backbone vs backprop ratio (madapter vs full) on 1 worker. Worker
    # scaling needs a third point (~20 s of Ray Train start-up each): full runs only.
    "quick": {"points": [["madapter", 1], ["full", 1]], "epochs": 4, "classes": 4,
              "videos_per_class": 12},
}
COMMON: dict[str, Any] = {"img_size": 32, "num_frames": 4, "width": 64, "batch_size_per_worker": 4,
                          "backbone": "vit_tiny_patch16_224 (random init)", "cpus_per_worker": 1, "ray_cpus": RAY_CPUS}


def bench_params(work: Path, tuning: str, workers: int, settings: dict[str, Any]) -> Params:
    """The train stage's parameters for one point; the data sections are the same for every point."""
    return params_from_dict({
        "base": {"seed": 0, "data_dir": str(work / "data"), "outputs_dir": str(work / f"out-{tuning}-{workers}")},
        "dataset": {"synthetic": {"classes": settings["classes"], "videos_per_class": settings["videos_per_class"],
                                  "num_frames": 8, "size": 32}},
        "scan": {"workers": 1},
        "decode": {"workers": 1, "frames_per_video": 8, "size": 32},
        "model": {"img_size": COMMON["img_size"], "num_frames": COMMON["num_frames"], "width": COMMON["width"],
                  "tuning": tuning},
        "train": {"epochs": settings["epochs"], "batch_size": COMMON["batch_size_per_worker"], "num_workers": workers,
                  "cpus_per_worker": COMMON["cpus_per_worker"], "storage_path": str(work / f"out-{tuning}-{workers}" / "ray"),
                  "run_name": f"{tuning}-{workers}w", "object_store_mb": 200},
        "mlflow": {"tracking_uri": f"sqlite:///{work / 'mlflow.db'}", "experiment": "train-scaling"},
    }, "benchmarks/train_scaling.py")


def point_row(tuning: str, workers: int, settings: dict[str, Any], work: Path) -> dict[str, Any]:
    """One point's run of the train stage; its numbers from the worker's history: medians over epochs 2..N."""
    from madapter.train.driver import train

    started = time.perf_counter()
    history = train(bench_params(work, tuning, workers, settings)).history
    wall_s = time.perf_counter() - started
    measured = history[1:] or history
    clips = statistics.median(h["clips_per_s"] for h in measured)
    return {
        "tuning": tuning, "workers": workers,
        "clips_per_s": round(clips, 2), "clips_per_s_per_worker": round(clips / workers, 2),
        "clips_per_s_epochs": [round(h["clips_per_s"], 2) for h in history],
        "peak_memory_mb_per_worker": round(max(h["peak_memory_mb"] for h in measured), 1),
        "epoch_time_s": round(statistics.median(h["epoch_time_s"] for h in measured), 3),
        "measured_epochs": [int(h["epoch"]) for h in measured], "wall_s": round(wall_s, 1),
    }


def run_points(work: Path, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Every point on one local Ray; a failing point is recorded with its last error line, the rest still run."""
    import ray

    from madapter.ray_runtime import worker_runtime_env

    data_stages(bench_params(work, "madapter", 1, settings))  # once: every point reads it
    ray.init(address="local", num_cpus=RAY_CPUS, object_store_memory=200 * 2**20, include_dashboard=False,
             runtime_env=worker_runtime_env())  # madapter on the path, Ray Train's cleaner noise filtered
    rows: list[dict[str, Any]] = []
    try:
        for tuning, workers in tqdm(settings["points"], desc="training points", unit="point"):
            rows.append({"tuning": tuning, "workers": workers, **attempt(
                f"{tuning} with {workers} worker(s)", point_row, tuning, workers, settings, work)})
            logger.info("%s", rows[-1])
    finally:
        ray.shutdown()
    return rows


def headline(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The ratios the docs' prose quotes, computed from the rows (None where a point is missing)."""
    ok = {(r["tuning"], r["workers"]): r for r in rows if "error" not in r}

    def ratio(a: tuple[str, int], b: tuple[str, int], key: str = "clips_per_s") -> float | None:
        return round(ok[a][key] / ok[b][key], 3) if a in ok and b in ok else None

    frozen_vs_backprop = [ratio((f, 1), (b, 1)) for f in FROZEN for b in BACKPROP]
    frozen_vs_backprop = [v for v in frozen_vs_backprop if v is not None]
    two_vs_one = {mode: ratio((mode, 2), (mode, 1)) for mode in MODES if (mode, 1) in ok and (mode, 2) in ok}
    rss = [r["peak_memory_mb_per_worker"] for r in ok.values()]
    extra_full = [round(ok[("full", w)]["peak_memory_mb_per_worker"] - ok[("madapter", w)]["peak_memory_mb_per_worker"], 1)
                  for w in (1, 2) if ("full", w) in ok and ("madapter", w) in ok]
    walls = [r["wall_s"] for r in ok.values()]
    return {
        "speedup_vs_full_1_worker": {mode: ratio((mode, 1), ("full", 1)) for mode in MODES if (mode, 1) in ok},
        "frozen_vs_backprop_1_worker": {"min": min(frozen_vs_backprop, default=None),
                                        "max": max(frozen_vs_backprop, default=None)},
        "two_vs_one_worker_total": two_vs_one,
        "two_workers_help": {mode: v > 1.0 for mode, v in two_vs_one.items() if v is not None},
        "peak_rss_mb_min": min(rss, default=None), "peak_rss_mb_max": max(rss, default=None),
        "full_minus_madapter_rss_mb": {"min": min(extra_full, default=None), "max": max(extra_full, default=None)},
        "wall_s_per_point": {"min": min(walls, default=None), "max": max(walls, default=None)},
        "failed_points": len(rows) - len(ok),
    }


# ----------------------------------------------------------------------------- report (pure)
def markdown(report: dict[str, Any], json_path: str) -> str:
    """The table of docs/benchmarks.md's "Training throughput" section, from the report alone."""
    s, h = report["settings"], report["headline"]
    head = ["tuning", "workers", "clips/s (total)", "clips/s per worker", "peak RSS per worker (MB)",
            "epoch (s)", "wall (s)"]
    rows = [[r["tuning"], r["workers"], f"failed: {r['error']}", None, None, None, None] if "error" in r else
            [r["tuning"], r["workers"], f"{r['clips_per_s']:.1f}", f"{r['clips_per_s_per_worker']:.1f}",
             f"{r['peak_memory_mb_per_worker']:.0f}", f"{r['epoch_time_s']:.2f}", f"{r['wall_s']:.0f}"]
            for r in report["rows"]]
    fb, two = h["frozen_vs_backprop_1_worker"], h["two_vs_one_worker_total"]
    lines = [
        *table(head, rows), "",
        f"Synthetic set {s['classes']} classes x {s['videos_per_class']} videos, {s['backbone']} at {s['img_size']} px, "
        f"T={s['num_frames']}, batch {s['batch_size_per_worker']} per worker, {s['epochs']} epochs; median of epochs "
        f"2-{s['epochs']}; Ray with {s['ray_cpus']} CPUs, {s['cpus_per_worker']} per worker.",
    ]
    if fb["min"] is not None:
        lines.append(f"Frozen-backbone modes (madapter, linear) vs backpropagating modes (inserted, full), 1 worker: "
                     f"{fb['min']:.1f}x-{fb['max']:.1f}x the clips/s.")
    if two:
        lines.append("Two workers vs one (total clips/s): "
                     + ", ".join(f"{mode} {v:.2f}x" for mode, v in two.items() if v is not None) + ".")
    return page(lines, report, json_path)


def plot(report: dict[str, Any], path: Path) -> None:
    """Two panels: clips/s per worker and peak RSS per worker, by mode, 1 vs 2 workers."""
    plt = pyplot()
    rows = [r for r in report["rows"] if "error" not in r]
    modes = [m for m in MODES if any(r["tuning"] == m for r in rows)]
    fig, (ax_speed, ax_mem) = plt.subplots(1, 2, figsize=(10, 3.8))
    width = 0.38
    for offset, workers in ((-width / 2, 1), (width / 2, 2)):
        sel = [r for r in rows if r["workers"] == workers]
        if not sel:
            continue
        xs = [modes.index(r["tuning"]) + offset for r in sel]
        ax_speed.bar(xs, [r["clips_per_s_per_worker"] for r in sel], width, label=f"{workers} worker(s)")
        ax_mem.bar(xs, [r["peak_memory_mb_per_worker"] for r in sel], width, label=f"{workers} worker(s)")
    for ax, label in ((ax_speed, "clips/s per worker"), (ax_mem, "peak RSS per worker (MB)")):
        ax.set_xticks(range(len(modes)), modes)
        ax.set_ylabel(label)
        ax.legend()
    fig.suptitle("Ray Train on CPU: throughput and memory per worker by tuning mode")
    save(fig, path, dpi=120)


def run(args: argparse.Namespace) -> dict[str, Any]:
    isolate()
    settings = {**PROFILES[args.configuration], **COMMON, "configuration": args.configuration}
    rows = run_points(args.work, settings)
    return {"settings": settings, "rows": rows, "headline": headline(rows)}


BENCHMARK = Benchmark(
    "train_scaling", __doc__, run, markdown, plot, packages=("torch", "timm", "ray", "mlflow", "numpy"),
    quick="2 points instead of 8 (same data, epochs)", minutes=(3.5, 1.0), work_dir=True,
    failures=lambda report: [f"{r['tuning']} x{r['workers']}" for r in report["rows"] if "error" in r])

if __name__ == "__main__":
    raise SystemExit(BENCHMARK.main())
