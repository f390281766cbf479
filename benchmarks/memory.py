"""Peak memory and step time of one training step for the four tuning modes.

Every mode runs in fresh processes (3 by default, median reported) on the same batch (ViT-B/16, random init, 8 frames,
224x224, 2 clips, CPU), so one mode's allocator state cannot flatter another's.  Memory is
read from the kernel: the process's peak resident set (``VmHWM``) is reset through
``/proc/self/clear_refs`` right before the step and read right after it, so the number is the
high-water mark of training (gradients, optimiser state, activations kept for backward) on
top of the already-built model and batch.  The total
peak (weights included) is reported as well.

    python benchmarks/memory.py                 # full benchmark, writes results/memory.{json,png}
    python benchmarks/memory.py --img-size 112  # quicker variant

Results: benchmarks/results/memory.json and memory.png, shown in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

logger = logging.getLogger("benchmarks.memory")

MODES = ("madapter", "inserted", "linear", "full")
RESULTS = Path(__file__).parent / "results"


def _vm_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_one(mode: str, backbone: str, img_size: int, frames: int, clips: int, steps: int) -> dict:
    """Run in a child process: build the model, then time and measure training steps."""
    import torch

    from madapter.config import ModelSection
    from madapter.models.build import build_model, count_parameters

    torch.manual_seed(0)
    cfg = ModelSection(backbone=backbone, img_size=img_size, num_frames=frames, tuning=mode, width=192)
    model = build_model(cfg, num_classes=400).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(clips, frames, 3, img_size, img_size, generator=g)
    y = torch.randint(0, 400, (clips,), generator=g)

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    # Baseline: model weights + batch are resident, nothing of training exists yet.  What the
    # step adds on top -- gradients, optimiser state, activations kept for backward -- is the
    # memory cost of the tuning method.
    rss_before = _vm_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (peak RSS) to the current RSS
    step()  # warm-up (first step also allocates grads and optimiser state), not timed
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    peak = _vm_kb("VmHWM")
    counts = count_parameters(model)
    return {
        "mode": mode,
        "step_s": sum(times) / len(times),
        "step_s_all": times,
        "peak_rss_mb": peak / 1024,
        "rss_before_step_mb": rss_before / 1024,
        "step_peak_mb": (peak - rss_before) / 1024,
        "trainable_params": counts["trainable"],
        "backbone_params": counts["backbone"],
        "torch_threads": torch.get_num_threads(),
    }


def run_all(args: argparse.Namespace) -> dict:
    """Launch one child process per mode and collect their JSON lines."""
    results = {}
    cmd = [sys.executable, __file__, "--backbone", args.backbone, "--img-size", str(args.img_size),
           "--frames", str(args.frames), "--clips", str(args.clips), "--steps", str(args.steps)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    for mode in MODES:
        repeats = []
        for i in range(args.repeats):
            logger.info("measuring %s (process %d/%d) ...", mode, i + 1, args.repeats)
            out = subprocess.run([*cmd, "--child", mode], check=True, capture_output=True, text=True, env=env)
            repeats.append(json.loads(out.stdout.strip().splitlines()[-1]))
        # The median process: the allocator's arena layout makes single-process peaks vary ~±15%.
        results[mode] = {
            **repeats[0],
            "step_s": statistics.median(r["step_s"] for r in repeats),
            "step_peak_mb": statistics.median(r["step_peak_mb"] for r in repeats),
            "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in repeats),
            "rss_before_step_mb": statistics.median(r["rss_before_step_mb"] for r in repeats),
            "step_s_all": [t for r in repeats for t in r["step_s_all"]],
            "step_peak_mb_all": [r["step_peak_mb"] for r in repeats],
        }
        logger.info("%s: %.1f MB step peak, %.1f MB total peak, %.2f s/step", mode,
                    results[mode]["step_peak_mb"], results[mode]["peak_rss_mb"], results[mode]["step_s"])
    full, inserted = results["full"], results["inserted"]
    ratios = {
        f"{m}_vs_full": {
            "step_peak_memory": results[m]["step_peak_mb"] / full["step_peak_mb"],
            "total_peak_memory": results[m]["peak_rss_mb"] / full["peak_rss_mb"],
            "step_time": results[m]["step_s"] / full["step_s"],
        }
        for m in MODES if m != "full"
    }
    ratios["madapter_vs_inserted"] = {
        "step_peak_memory": results["madapter"]["step_peak_mb"] / inserted["step_peak_mb"],
        "total_peak_memory": results["madapter"]["peak_rss_mb"] / inserted["peak_rss_mb"],
        "step_time": results["madapter"]["step_s"] / inserted["step_s"],
    }
    return {
        "benchmark": "one training step per tuning mode (forward + backward + AdamW), each mode in its own process",
        "setup": {"backbone": args.backbone, "weights": "random init", "img_size": args.img_size,
                  "frames": args.frames, "clips": args.clips, "timed_steps": args.steps,
                  "processes_per_mode": args.repeats, "statistic": "median over processes", "device": "cpu",
                  "machine": f"{platform.machine()}, {os.cpu_count()} cores", "python": platform.python_version()},
        "modes": results,
        "ratios": ratios,
        "targets": {"madapter_vs_full.step_peak_memory": 0.15, "madapter_vs_full.step_time": 0.35,
                    "madapter_vs_inserted.step_peak_memory": 0.2},
    }


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = list(report["modes"])
    step_mb = [report["modes"][m]["step_peak_mb"] for m in modes]
    total_mb = [report["modes"][m]["peak_rss_mb"] for m in modes]
    secs = [report["modes"][m]["step_s"] for m in modes]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    xs = range(len(modes))
    axes[0].bar([x - 0.2 for x in xs], total_mb, width=0.4, label="total peak RSS (incl. weights)", color="#9ecae1")
    axes[0].bar([x + 0.2 for x in xs], step_mb, width=0.4, label="peak added by training", color="#3182bd")
    axes[0].set_xticks(list(xs), modes)
    axes[0].set_ylabel("MB")
    axes[0].legend(fontsize=8)
    axes[0].set_title("Peak memory of one training step")
    axes[1].bar(xs, secs, color="#fd8d3c")
    axes[1].set_xticks(list(xs), modes)
    axes[1].set_ylabel("seconds")
    axes[1].set_title("Step time")
    s = report["setup"]
    fig.suptitle(f"{s['backbone']} ({s['weights']}), {s['clips']} clips x {s['frames']} frames x {s['img_size']}px, CPU")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="vit_base_patch16_224")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--clips", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per process (after one warm-up step)")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per mode; the median is reported")
    parser.add_argument("--out", type=Path, default=RESULTS / "memory.json")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        logging.disable(logging.WARNING)
        print(json.dumps(measure_one(args.child, args.backbone, args.img_size, args.frames, args.clips, args.steps)))
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    report = run_all(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    plot(report, args.out.with_suffix(".png"))
    for name, r in report["ratios"].items():
        logger.info("%-22s step memory %.3fx  total memory %.3fx  time %.3fx", name,
                    r["step_peak_memory"], r["total_peak_memory"], r["step_time"])
    logger.info("wrote %s and %s", args.out, args.out.with_suffix(".png"))


if __name__ == "__main__":
    main()
