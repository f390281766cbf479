"""Peak training memory and step time as the work grows: frames per clip, then backbone size.

Issue 12, point 2.  Every point (backbone, frames, tuning mode) is one fresh process of
``benchmarks.memory``'s CPU child at its headline setting (random init, fp32, 2 clips, width 192,
conv): one warm-up and one timed step, and the kernel's peak resident set over both, on top of
the built model and batch, is "peak added by training".  Modes: ``madapter``, ``madapter-features``
(the head alone on float16-rounded inputs shaped like the stored features: input, like clips,
not training memory), ``inserted``, ``full`` and ``linear``.

* Sweep A (frames): T in {4, 8, 16, 32}, ViT-B/16 at 224 px.
* Sweep B (backbone size): ViT tiny / small / base / large at T = 8 (base's points are sweep A's).
* Per mode, the least-squares slope of "peak added by training" (MB) against T and its ratio to
  ``full``'s; the target (``madapter`` <= 0.1x ``full``) and its verdict are under ``headline``.

``--quick``: 112 px, T in {4, 8}, backbones tiny and base.  A single process's memory varies ~10%
(allocator arenas): slopes over a 4x range of T are robust to that, single points less so.

    python -m benchmarks.memory_scaling            # ~12 min on a quiet 2-core machine, needs ~12 GB free
    python -m benchmarks.memory_scaling --quick    # ~2 min
"""

from __future__ import annotations

import argparse
import logging
import statistics
from pathlib import Path
from typing import Any

from benchmarks.harness import Benchmark, fmt, pyplot, save, table, vm_kb
from benchmarks.memory import DEVICE_DEFAULTS, _backbone_chunk, describe, run_child

logger = logging.getLogger("benchmarks.memory_scaling")

MODES = ("madapter", "madapter-features", "inserted", "full", "linear")
TARGET_SLOPE_RATIO = 0.1
"""Issue 12: ``madapter``'s memory growth per added frame must be at most this fraction of ``full``'s."""
REFERENCE = {"full_mb_per_frame": 260, "side_branch_mb_per_frame": 23,
             "source": "issue 12 (measured on this kind of machine, 2 clips of ViT-B/16)"}
BACKBONES = ("vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224", "vit_large_patch16_224")

CONFIGS: dict[str, dict[str, Any]] = {
    "full": {"img_size": 224, "frames": [4, 8, 16, 32], "frames_backbone": "vit_base_patch16_224",
             "backbones": list(BACKBONES), "backbone_frames": 8, "modes": list(MODES)},
    # Two sizes 15x apart: each process costs ~4 s of imports before its steps, which dominates here.
    "quick": {"img_size": 112, "frames": [4, 8], "frames_backbone": "vit_base_patch16_224",
              "backbones": [BACKBONES[0], BACKBONES[2]], "backbone_frames": 8, "modes": list(MODES)},
    # The test's configuration (seconds): the machinery, not a result to quote.
    "smoke": {"img_size": 32, "frames": [2, 4], "frames_backbone": "vit_tiny_patch16_224",
              "backbones": ["vit_tiny_patch16_224"], "backbone_frames": 4, "modes": ["madapter", "full"]},
}
CPU = DEVICE_DEFAULTS["cpu"]
"""memory.py's CPU headline setting (2 clips, the default branch of params.yaml): every point's."""
DROPPED = ("nothing: every point of the grid is measured, with the fewest steps that measure memory "
           "(1 warm-up + 1 timed step, 1 process per point)")


# ----------------------------------------------------------------------------- measuring
def grid(config: dict[str, Any]) -> list[tuple[str, int, str]]:
    """Every point ``(backbone, frames, mode)`` of both sweeps, once (sweep B reuses sweep A's points)."""
    points = [(config["frames_backbone"], t, m) for t in config["frames"] for m in config["modes"]]
    points += [(b, config["backbone_frames"], m) for b in config["backbones"] for m in config["modes"]]
    return list(dict.fromkeys(points))


def measure(config: dict[str, Any]) -> list[dict[str, Any]]:
    """One fresh process per point (the same child as memory's headline); a failed point keeps its
    error and the sweep goes on."""
    from tqdm import tqdm

    records = []
    for backbone, frames, mode in tqdm(grid(config), desc="points", unit="process"):
        available_gb = vm_kb("MemAvailable", "/proc/meminfo") / 2**20  # the big points need ~10 GB
        logger.info("%s, T=%d, %s (%.1f GB available) ...", backbone, frames, mode, available_gb)
        args = argparse.Namespace(device="cpu", backbone=backbone, img_size=config["img_size"], frames=frames,
                                  batch=CPU["batch"], steps=1, width=CPU["width"], temporal=CPU["temporal"])
        record = run_child(args, mode)
        record.update(backbone=backbone, frames=frames, mode=mode)
        logger.info("  %s", describe(record))
        records.append(record)
    return records


# ----------------------------------------------------------------------------- analysis (pure)
def ok(record: dict[str, Any]) -> bool:
    return "error" not in record


def frames_series(report: dict[str, Any], mode: str) -> list[dict[str, Any]]:
    """Sweep A's measured points of ``mode``, by increasing T."""
    sweep = report["setup"]["frames_sweep"]
    return sorted((p for p in report["points"] if p["backbone"] == sweep["backbone"] and p["mode"] == mode
                   and p["frames"] in sweep["frames"] and ok(p)), key=lambda p: p["frames"])


def backbone_series(report: dict[str, Any], mode: str) -> list[dict[str, Any]]:
    """Sweep B's measured points of ``mode``, in the order of the backbones."""
    s = report["setup"]["backbone_sweep"]
    by = {p["backbone"]: p for p in report["points"] if p["mode"] == mode and p["frames"] == s["frames"] and ok(p)}
    return [by[b] for b in s["backbones"] if b in by]


def slopes(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per mode: MB and seconds per added frame (sweep A's least-squares lines) and the memory slope's
    ratio to ``full``'s; ``None`` under two distinct T."""
    out: dict[str, dict[str, Any]] = {}
    for mode in report["setup"]["modes"]:
        series = frames_series(report, mode)
        ts = [p["frames"] for p in series]
        fitted = len(set(ts)) > 1
        mem = statistics.linear_regression(ts, [p["step_peak_mb"] for p in series]) if fitted else None
        sec = statistics.linear_regression(ts, [p["step_s"] for p in series]) if fitted else None
        out[mode] = {"frames": ts, "mb_per_frame": mem and mem.slope, "intercept_mb": mem and mem.intercept,
                     "s_per_frame": sec and sec.slope}
    full = out.get("full", {}).get("mb_per_frame")
    for record in out.values():
        mb = record["mb_per_frame"]
        record["ratio_to_full"] = mb / full if mb is not None and full is not None and full > 0 else None
    return out


def by_backbone(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per backbone of sweep B: its size and ``madapter``'s memory and time over ``full``'s (claim 3)."""
    out = {}
    for backbone in report["setup"]["backbone_sweep"]["backbones"]:
        rec = {m: next((p for p in backbone_series(report, m) if p["backbone"] == backbone), None)
               for m in ("madapter", "madapter-features", "full")}
        size = next((r["backbone_params"] for r in rec.values() if r), None)
        entry: dict[str, Any] = {"backbone_params": size}
        for mode in ("madapter", "madapter-features"):
            a, f = rec[mode], rec["full"]
            entry[f"{mode}_vs_full_memory"] = a["step_peak_mb"] / f["step_peak_mb"] if a and f else None
            entry[f"{mode}_vs_full_time"] = a["step_s"] / f["step_s"] if a and f else None
        out[backbone] = entry
    return out


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The numbers the docs quote: both slopes, their ratio, the target and its verdict."""
    sl = report["slopes"]
    ratio = sl.get("madapter", {}).get("ratio_to_full")
    met = None if ratio is None else ratio <= TARGET_SLOPE_RATIO
    backbones = report["setup"]["backbone_sweep"]["backbones"]
    first, last = report["by_backbone"][backbones[0]], report["by_backbone"][backbones[-1]]
    return {
        **{f"{m.replace('-', '_')}_mb_per_frame": sl.get(m, {}).get("mb_per_frame")
           for m in ("madapter", "madapter-features", "full", "inserted", "linear")},
        "madapter_slope_ratio_to_full": ratio,
        "madapter_features_slope_ratio_to_full": sl.get("madapter-features", {}).get("ratio_to_full"),
        "target_slope_ratio": TARGET_SLOPE_RATIO,
        "target_met": met,
        "verdict": {True: "met", False: "NOT met", None: "not measured"}[met],
        "smallest_backbone_madapter_vs_full_memory": first["madapter_vs_full_memory"],
        "largest_backbone_madapter_vs_full_memory": last["madapter_vs_full_memory"],
    }


def analyse(report: dict[str, Any]) -> dict[str, Any]:
    """``report`` with ``slopes``, ``by_backbone`` and ``headline`` computed from its points."""
    report["slopes"] = slopes(report)
    report["by_backbone"] = by_backbone(report)
    report["headline"] = headline(report)
    return report


def build_report(config_name: str, config: dict[str, Any], points: list[dict[str, Any]]) -> dict[str, Any]:
    """The JSON: setup, every point as measured, then the analysis."""
    report = {
        "setup": {
            "config": config_name, "device": "cpu", "dtype": "float32", "weights": "random init",
            "img_size": config["img_size"], "clips": CPU["batch"], "width": CPU["width"],
            "temporal": CPU["temporal"],
            "level_pool": None, "backbone_chunk": _backbone_chunk(), "modes": config["modes"],
            "frames_sweep": {"backbone": config["frames_backbone"], "frames": config["frames"]},
            "backbone_sweep": {"frames": config["backbone_frames"], "backbones": config["backbones"]},
            "warmup_steps": 1, "timed_steps": 1, "processes_per_point": 1,
            "memory": "peak RSS (VmHWM, reset after the model and batch are built) over warm-up + timed step, "
                      "minus RSS before the steps: 'peak added by training'",
            "features_input": "madapter-features: per level [clips, T, h, w, C] and pooled [clips, T, D], "
                              "float16 values fed as float32 (FeatureDataset); no backbone in the process",
            "dropped": DROPPED,
        },
        "reference": REFERENCE,
        "points": points,
    }
    return analyse(report)


# ----------------------------------------------------------------------------- report (pure)
def markdown(report: dict[str, Any], json_path: str) -> str:
    """Both sweeps' tables (peak added by training / step time per cell), then the slopes and the verdict."""
    s, h = report["setup"], report["headline"]
    modes, fs, bs = s["modes"], s["frames_sweep"], s["backbone_sweep"]
    points = {(p["backbone"], p["frames"], p["mode"]): p for p in report["points"]}

    def cells(backbone: str, frames: int) -> list[str]:
        found = [points.get((backbone, frames, m)) for m in modes]
        return ["-" if p is None else f"failed: {p['error']}" if not ok(p) else
                f"{p['step_peak_mb']:.0f} MB / {p['step_s']:.2f} s" for p in found]

    by_size = []
    for b in bs["backbones"]:
        info = report["by_backbone"][b]
        size = fmt(info["backbone_params"] and info["backbone_params"] / 1e6, ".1f", " M")
        by_size.append([f"{b.removesuffix('_patch16_224')} ({size})", *cells(b, bs["frames"]),
                        fmt(info["madapter_vs_full_memory"], ".3f", "x")])
    growth = [[f"`{m}`", fmt(r["mb_per_frame"], ".1f"), fmt(r["ratio_to_full"], ".3f", "x"),
               fmt(r["s_per_frame"], ".3f")] for m, r in ((m, report["slopes"][m]) for m in modes)]
    by_frames = [[t, *cells(fs["backbone"], t)] for t in fs["frames"]]
    lines = [f"Frames per clip ({fs['backbone']}, {s['clips']} clips, {s['img_size']} px; "
             "each cell: peak added by training / step time):", "",
             *table(["T", *(f"`{m}`" for m in modes)], by_frames), "",
             f"Backbone size (T = {bs['frames']}, {s['clips']} clips, {s['img_size']} px):", "",
             *table(["backbone (params)", *(f"`{m}`" for m in modes), "madapter / full memory"], by_size), "",
             f"Growth per added frame (least squares over T = {', '.join(map(str, fs['frames']))}):", "",
             *table(["mode", "MB per frame", "ratio to `full`", "s per frame"], growth), "",
             f"Target `madapter` slope <= {h['target_slope_ratio']}x `full`'s: **{h['verdict']}** "
             f"({fmt(h['madapter_slope_ratio_to_full'], '.3f', 'x')}).", "",
             f"Source: `{json_path}`, written by `{report.get('command', '?')}`."]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: Path) -> None:
    """Three panels: memory vs T, memory vs backbone parameters, step time vs T (one line per mode)."""
    plt = pyplot()
    s = report["setup"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for mode in s["modes"]:
        a = frames_series(report, mode)
        b = backbone_series(report, mode)
        slope = report["slopes"][mode]["mb_per_frame"]
        label = mode if slope is None else f"{mode} ({slope:.0f} MB/frame)"
        axes[0].plot([p["frames"] for p in a], [p["step_peak_mb"] for p in a], marker="o", label=label)
        axes[1].plot([p["backbone_params"] / 1e6 for p in b], [p["step_peak_mb"] for p in b], marker="o", label=mode)
        axes[2].plot([p["frames"] for p in a], [p["step_s"] for p in a], marker="o", label=mode)
    fs, bs = s["frames_sweep"], s["backbone_sweep"]
    axes[0].set(xlabel="frames per clip T", ylabel="peak added by training (MB)",
                title=f"Memory vs T ({fs['backbone'].removesuffix('_patch16_224')})")
    axes[1].set(xlabel="backbone parameters (M)", ylabel="peak added by training (MB)", xscale="log", yscale="log",
                title=f"Memory vs backbone size (T = {bs['frames']})")
    axes[2].set(xlabel="frames per clip T", ylabel="step time (s)", title="Step time vs T")
    sizes = {p["backbone"]: p["backbone_params"] / 1e6 for p in report["points"] if ok(p) and p["frames"] == bs["frames"]}
    axes[1].set_xticks([sizes[b] for b in bs["backbones"] if b in sizes],
                       [f"{b.split('_')[1]}\n{sizes[b]:.0f} M" for b in bs["backbones"] if b in sizes])
    axes[1].minorticks_off()
    for ax in (axes[0], axes[2]):
        ax.set_xscale("log", base=2)
        ax.set_xticks(fs["frames"], [str(t) for t in fs["frames"]])
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"One training step, {s['clips']} clips x {s['img_size']} px, CPU fp32, random init "
                 f"(target: madapter slope <= {report['headline']['target_slope_ratio']}x full: "
                 f"{report['headline']['verdict']})", fontsize=10)
    save(fig, path)


def run(args: argparse.Namespace) -> dict[str, Any]:
    config = CONFIGS[args.configuration]
    return build_report(args.configuration, config, measure(config))


BENCHMARK = Benchmark(
    "memory_scaling", __doc__, run, markdown, plot, packages=("torch", "timm", "numpy"),
    quick="112 px, T in {4, 8}, backbones tiny and base", minutes=(13.0, 1.5), smoke=True,
    failures=lambda report: [f"{p['backbone']} T={p['frames']} {p['mode']}" for p in report["points"] if not ok(p)])

if __name__ == "__main__":
    raise SystemExit(BENCHMARK.main())
