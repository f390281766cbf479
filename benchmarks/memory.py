"""Peak memory and step time of one training step for the four tuning modes, on CPU or on a GPU.

Every mode runs in its own fresh processes on the same batch, so one mode's allocator state
cannot flatter another's, and the model is driven the way training drives it
(``madapter/train/step.py``): ``build_model``, then for the frozen-backbone modes ``model.extract``
(frozen, ``no_grad``) followed by ``model.adapter``, the whole forward under the branch's
autocast, then backward and an AdamW step.

``--device cpu`` (default; ViT-B/16 random init, 8 frames, 224x224, 2 clips, fp32, 3 processes
per mode, median): memory is read from the kernel.  The process's peak resident set
(``VmHWM``) is reset through ``/proc/self/clear_refs`` right before the step and read right
after it, so the number is the high-water mark of training (gradients, optimiser state,
activations kept for backward) on top of the already-built model and batch.  The total peak
(weights included) is reported as well.

``--device cuda`` (ViT-B/16 random init, 8 frames, 224x224, batch 32: the setting of the
published table in the Side4Video repository): the frozen backbone runs in half precision
(``model.half_precision: true``) and the branch under bf16 autocast (fp16 on GPUs without
native bf16).  Peak statistics are reset after the model and batch are on the GPU; then one
warm-up step (it also allocates gradients and AdamW state) and the measured step(s) run, and
``torch.cuda.max_memory_allocated`` is the peak of training *including* weights, batch and
optimiser state -- the figure a training run reports.  One process per mode (the allocator's
peak is reproducible; ``--repeats`` for more).  A mode that runs out of GPU memory is recorded
as OOM together with the GPU's total memory.

    python benchmarks/memory.py                          # CPU, writes results/memory.{json,png}
    python benchmarks/memory.py --device cuda            # GPU, writes results/memory_cuda.{json,png,md}
    python benchmarks/memory.py --backbone vit_tiny_patch16_224 --img-size 32 --frames 4 --repeats 1 \\
        --out /tmp/memory.json                           # seconds-long smoke test of the script

Results are shown in docs/benchmarks.md.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger("benchmarks.memory")

MODES = ("madapter", "inserted", "linear", "full")
RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES = 400

PUBLISHED_GB = {"ST-Adapter": 28.8, "AIM": 35.2, "EVL": 17.9, "Side4Video": 18.8, "DiST": 12.7}
"""Training memory, ViT-B/16, 8 frames, batch 32, as re-measured in the Side4Video repository's table."""
PUBLISHED_SOURCE = "Side4Video repository (HJYao00/Side4Video), table of training memory, ViT-B/16, 8 frames, batch 32"
TARGET_GB = min(PUBLISHED_GB.values())
"""``madapter`` must train in less memory than every published method (DiST, 12.7 GB)."""
GIB = 2**30

DEVICE_DEFAULTS: dict[str, dict[str, Any]] = {
    # The CPU figures in docs/benchmarks.md: 2 clips, the default branch (params.yaml), fp32.
    "cpu": {"batch": 2, "repeats": 3, "width": 192, "temporal": "conv", "out": RESULTS / "memory.json"},
    # The published setting (batch 32) and the branch of presets/kinetics400.yaml, the
    # configuration someone comparing with the published K400 numbers would train.
    "cuda": {"batch": 32, "repeats": 1, "width": 384, "temporal": "attention", "out": RESULTS / "memory_cuda.json"},
}


class BenchmarkError(RuntimeError):
    """The benchmark cannot run as asked; the message is one line saying what to do."""


# ----------------------------------------------------------------------------- child process side
def _vm_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def build(mode: str, args: argparse.Namespace, device: str):
    """The model of ``mode`` on ``device``, its AdamW optimiser and one fixed batch (seeded)."""
    import torch

    from madapter.config import ModelSection
    from madapter.models.build import build_model

    torch.manual_seed(0)
    cfg = ModelSection(
        backbone=args.backbone, img_size=args.img_size, num_frames=args.frames, tuning=mode, width=args.width,
        temporal=args.temporal, half_precision=device == "cuda",
    )
    model = build_model(cfg, num_classes=NUM_CLASSES).to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, args.frames, 3, args.img_size, args.img_size, generator=g).to(device)
    y = torch.randint(0, NUM_CLASSES, (args.batch,), generator=g).to(device)
    return model, optimizer, x, y


def make_step(model, optimizer, x, y, amp: str) -> Callable[[], None]:
    """One training step as the Ray worker runs it (madapter/train/step.py): the frozen backbone outside
    the trained module, its precision from ``model.half_precision`` (inside ``extract``), the
    rest under ``train.amp``'s autocast."""
    import torch

    from madapter.models.precision import amp_autocast

    def forward() -> torch.Tensor:
        if model.backbone_frozen:
            features = model.extract(x)  # no_grad; half precision from model.half_precision
            return model.adapter(features.levels, features.pooled)
        return model(x)

    def step() -> None:
        with amp_autocast(amp, x.device):
            logits = forward()
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def measure_cpu(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """Child process: peak RSS (VmHWM) of training on top of the built model and batch, and step time."""
    import torch

    from madapter.models.build import count_parameters

    model, optimizer, x, y = build(mode, args, "cpu")
    step = make_step(model, optimizer, x, y, amp="none")
    # Baseline: model weights + batch are resident, nothing of training exists yet.  What the
    # step adds on top -- gradients, optimiser state, activations kept for backward -- is the
    # memory cost of the tuning method.
    rss_before = _vm_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (peak RSS) to the current RSS
    step()  # warm-up (first step also allocates grads and optimiser state), not timed
    times = []
    for _ in range(args.steps):
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


def branch_amp() -> str:
    """``train.amp`` of the benchmark: bf16 where the GPU has it natively, else fp16 (emulated bf16
    would distort the step time and save nothing)."""
    import torch

    return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"


def is_oom(err: BaseException) -> bool:
    """Out of GPU memory, also when cuBLAS/cuDNN report it as a plain RuntimeError (workspace allocation)."""
    import torch

    text = str(err)
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in text or "ALLOC_FAILED" in text


def measure_cuda(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """Child process: ``torch.cuda.max_memory_allocated`` of warm-up + measured steps; OOM is a result."""
    import torch

    from madapter.models.build import count_parameters

    device = torch.device("cuda")
    props = torch.cuda.get_device_properties(device)
    amp = branch_amp()
    result: dict[str, Any] = {
        "mode": mode, "gpu": props.name, "gpu_total_bytes": props.total_memory, "branch_amp": amp, "oom": False,
    }
    try:
        model, optimizer, x, y = build(mode, args, "cuda")
        step = make_step(model, optimizer, x, y, amp)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()  # warm-up: also allocates gradients, AdamW state, the cuBLAS workspace
        torch.cuda.synchronize(device)
        times = []
        for _ in range(args.steps):
            t0 = time.perf_counter()
            step()
            torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
        peak, reserved = torch.cuda.max_memory_allocated(device), torch.cuda.max_memory_reserved(device)
    except (torch.cuda.OutOfMemoryError, RuntimeError) as err:
        if not is_oom(err):
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else "CUDA out of memory"
        return {**result, "oom": True, "error": first}
    counts = count_parameters(model)
    return {
        **result,
        "peak_bytes": peak,
        "peak_gb": peak / GIB,
        "peak_reserved_gb": reserved / GIB,
        "model_and_batch_gb": before / GIB,
        "step_added_gb": (peak - before) / GIB,
        "step_s": sum(times) / len(times),
        "step_s_all": times,
        "trainable_params": counts["trainable"],
        "backbone_params": counts["backbone"],
    }


# ----------------------------------------------------------------------------- parent side
def _child_command(args: argparse.Namespace, mode: str) -> list[str]:
    return [
        sys.executable, str(Path(__file__).resolve()), "--device", args.device, "--backbone", args.backbone,
        "--img-size", str(args.img_size), "--frames", str(args.frames), "--batch", str(args.batch),
        "--steps", str(args.steps), "--width", str(args.width), "--temporal", args.temporal, "--child", mode,
    ]


def run_child(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    """One fresh process measuring ``mode``; a crash becomes ``{"error": <its last stderr line>}``."""
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": path}
    proc = subprocess.run(_child_command(args, mode), capture_output=True, text=True, env=env, cwd=REPO)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    err = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    return {"mode": mode, "error": f"exit {proc.returncode}: {err[-1] if err else 'no output'}"}


def measure_modes(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """Every mode, ``args.repeats`` fresh processes each, in the order of :data:`MODES`."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for mode in MODES:
        runs[mode] = []
        for i in range(args.repeats):
            logger.info("measuring %s on %s (process %d/%d) ...", mode, args.device, i + 1, args.repeats)
            runs[mode].append(run_child(args, mode))
            logger.info("%s: %s", mode, describe(runs[mode][-1]))
    return runs


def describe(record: dict[str, Any]) -> str:
    """One human-readable phrase for a child's record (log lines)."""
    if record.get("error") and not record.get("oom"):
        return f"failed ({record['error']})"
    if record.get("oom"):
        return f"OOM on a {record['gpu_total_bytes'] / GIB:.1f} GB GPU"
    if "peak_gb" in record:
        return f"{record['peak_gb']:.2f} GB peak allocated, {record['step_s']:.3f} s/step"
    return f"{record['step_peak_mb']:.1f} MB step peak, {record['peak_rss_mb']:.1f} MB total peak, {record['step_s']:.2f} s/step"


def _median_record(repeats: list[dict[str, Any]], keys: tuple[str, ...], all_key: str) -> dict[str, Any]:
    """The first record with ``keys`` replaced by their median over processes (single peaks vary)."""
    merged = {**repeats[0], **{k: statistics.median(r[k] for r in repeats) for k in keys}}
    merged["step_s_all"] = [t for r in repeats for t in r["step_s_all"]]
    merged[all_key] = [r[keys[0]] for r in repeats]
    return merged


def _backbone_chunk() -> int | None:
    """Frames per frozen-backbone call: the ``model.backbone_chunk`` default, which the benchmark keeps."""
    from madapter.config import ModelSection

    return ModelSection().backbone_chunk


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def summarize_cpu(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> dict[str, Any]:
    """The CPU report: median per mode, ratios against ``full`` and ``inserted`` (format of results/memory.json)."""
    failed = {m: r[0]["error"] for m, r in runs.items() if any("error" in x for x in r)}
    if failed:
        raise BenchmarkError(f"memory.py: mode(s) failed on cpu: {failed}")
    results = {
        m: _median_record(r, ("step_peak_mb", "step_s", "peak_rss_mb", "rss_before_step_mb"), "step_peak_mb_all")
        for m, r in runs.items()
    }
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
                  "frames": args.frames, "clips": args.batch, "width": args.width, "temporal": args.temporal,
                  "backbone_chunk": _backbone_chunk(),
                  "timed_steps": args.steps, "processes_per_mode": args.repeats, "statistic": "median over processes",
                  "device": "cpu", "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                  "python": platform.python_version()},
        "modes": results,
        "ratios": ratios,
        "targets": {"madapter_vs_full.step_peak_memory": 0.15, "madapter_vs_full.step_time": 0.35,
                    "madapter_vs_inserted.step_peak_memory": 0.2},
    }


def summarize_cuda(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> dict[str, Any]:
    """The GPU report: peak per mode (OOM/failed kept as such), the published peers and the target."""
    results: dict[str, dict[str, Any]] = {}
    for mode, repeats in runs.items():
        measured = [r for r in repeats if "peak_bytes" in r]
        if len(measured) == len(repeats):
            results[mode] = _median_record(measured, ("peak_bytes", "peak_gb", "step_s"), "peak_gb_all")
        else:  # an OOM or a crash in any process is the mode's result: the step does not fit reliably
            results[mode] = next(r for r in repeats if "peak_bytes" not in r)
    peak = {m: results[m].get("peak_bytes") for m in MODES}
    madapter = peak["madapter"]
    gpu = next((r for r in results.values() if "gpu" in r), {})
    return {
        "benchmark": "one training step per tuning mode on one GPU (warm-up + measured step, AdamW), each mode in its own process",
        "setup": {"backbone": args.backbone, "weights": "random init", "img_size": args.img_size, "frames": args.frames,
                  "batch": args.batch, "width": args.width, "temporal": args.temporal, "num_classes": NUM_CLASSES,
                  "backbone_chunk": _backbone_chunk(),
                  "backbone_precision": "model.half_precision: true (bf16 autocast, fp16 without native bf16)",
                  "branch_amp": gpu.get("branch_amp"), "timed_steps": args.steps, "processes_per_mode": args.repeats,
                  "statistic": "torch.cuda.max_memory_allocated over warm-up + measured steps, weights/batch/optimizer "
                               "state included; GB = 2^30 bytes; median over processes",
                  "device": "cuda", "gpu": gpu.get("gpu"), "gpu_total_gb": gpu.get("gpu_total_bytes", 0) / GIB,
                  "python": platform.python_version()},
        "modes": results,
        "ratios": {
            "madapter_vs_full.peak": _ratio(madapter, peak["full"]),
            "madapter_vs_inserted.peak": _ratio(madapter, peak["inserted"]),
            "madapter_vs_linear.peak": _ratio(madapter, peak["linear"]),
        },
        "published_gb": PUBLISHED_GB,
        "published_source": PUBLISHED_SOURCE,
        "target": {
            "madapter_peak_below_gb": TARGET_GB,
            # Below 12.7e9 bytes: under the published figure whether it meant 10^9 or 2^30 bytes.
            "met": None if madapter is None else madapter < TARGET_GB * 1e9,
        },
    }


def _cell(record: dict[str, Any]) -> str:
    if record.get("oom"):
        return f"OOM (GPU has {record['gpu_total_bytes'] / GIB:.1f} GB)"
    if "peak_gb" not in record:
        return f"failed: {record.get('error', '?')}"
    return f"{record['peak_gb']:.2f} GB"


def markdown_cuda(report: dict[str, Any]) -> str:
    """The table for docs/benchmarks.md: measured modes, then the published peers, then the target."""
    s = report["setup"]
    lines = [
        f"GPU figures: {s['gpu']} ({s['gpu_total_gb']:.1f} GB), {s['backbone']} random init, {s['frames']} frames, "
        f"{s['img_size']}x{s['img_size']}, batch {s['batch']}, backbone half precision, branch {s['branch_amp']} autocast.",
        "",
        "| method | gradient through backbone | peak training memory | step time |",
        "|---|---|---|---|",
    ]
    through = {"madapter": "no", "linear": "no", "inserted": "yes (adapters inside)", "full": "yes (all weights)"}
    for mode, record in report["modes"].items():
        step = f"{record['step_s']:.3f} s" if "step_s" in record else "-"
        lines.append(f"| `{mode}` (measured) | {through[mode]} | {_cell(record)} | {step} |")
    for name, gb in PUBLISHED_GB.items():
        lines.append(f"| {name} (published) | {'yes' if name in ('ST-Adapter', 'AIM') else 'no'} | {gb} GB | - |")
    met = report["target"]["met"]
    verdict = "not measured" if met is None else ("met" if met else "NOT met")
    lines += ["", f"Target `madapter` < {TARGET_GB} GB (DiST): **{verdict}**."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- plots
def plot_cpu(report: dict[str, Any], path: Path) -> None:
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
    plt.close(fig)


def plot_cuda(report: dict[str, Any], path: Path) -> None:
    """Measured modes (blue; OOM drawn hatched at the GPU's size) next to the published peers (grey)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = report["setup"]
    names, heights, colors, hatches = [], [], [], []
    for mode, record in report["modes"].items():
        names.append(mode)
        heights.append(record.get("peak_gb", s["gpu_total_gb"] if record.get("oom") else 0.0))
        colors.append("#3182bd")
        hatches.append("//" if record.get("oom") else "")
    for name, gb in PUBLISHED_GB.items():
        names.append(name)
        heights.append(gb)
        colors.append("#bdbdbd")
        hatches.append("")
    fig, ax = plt.subplots(figsize=(10, 4))
    bars = ax.bar(range(len(names)), heights, color=colors)
    for bar, hatch in zip(bars, hatches, strict=True):
        bar.set_hatch(hatch)
        if hatch:  # an OOM bar is drawn at the GPU's size: say so on it
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), "OOM", ha="center", va="bottom", fontsize=8)
    ax.axhline(TARGET_GB, color="#d62728", linestyle="--", linewidth=1, label=f"target: below DiST ({TARGET_GB} GB)")
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.set_ylabel("peak training memory (GB)")
    ax.legend(fontsize=8)
    ax.set_title(f"{s['gpu']}: {s['backbone']}, {s['frames']} frames, {s['img_size']}px, batch {s['batch']} "
                 "(blue: measured, grey: published, hatched: OOM)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- command line
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--backbone", default="vit_base_patch16_224")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--batch", "--clips", dest="batch", type=int, help="clips per step (cpu: 2, cuda: 32)")
    parser.add_argument("--width", type=int, help="branch width d (cpu: 192 as params.yaml, cuda: 384 as the K400 preset)")
    parser.add_argument("--temporal", choices=("conv", "attention", "none"), help="temporal module (cpu: conv, cuda: attention)")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per process (after one warm-up step)")
    parser.add_argument("--repeats", type=int, help="fresh processes per mode, median reported (cpu: 3, cuda: 1)")
    parser.add_argument("--out", type=Path, help="JSON path (cpu: results/memory.json, cuda: results/memory_cuda.json)")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for key, value in DEVICE_DEFAULTS[args.device].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def require_cuda() -> None:
    """One line, before any work, when ``--device cuda`` cannot run here."""
    import torch

    if not torch.cuda.is_available():
        raise BenchmarkError(
            "memory.py: --device cuda needs a CUDA device (torch.cuda.is_available() is False); "
            "run it on a machine with an NVIDIA GPU, or use --device cpu"
        )


def write_report(report: dict[str, Any], out: Path, device: str) -> None:
    """JSON, plot and (GPU) the markdown table for docs/benchmarks.md, side by side."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    if device == "cuda":
        plot_cuda(report, out.with_suffix(".png"))
        out.with_suffix(".md").write_text(markdown_cuda(report))
        logger.info("\n%s", markdown_cuda(report))
    else:
        plot_cpu(report, out.with_suffix(".png"))
        for name, r in report["ratios"].items():
            logger.info("%-22s step memory %.3fx  total memory %.3fx  time %.3fx", name,
                        r["step_peak_memory"], r["total_peak_memory"], r["step_time"])
    logger.info("wrote %s and its plot", out)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        logging.disable(logging.WARNING)
        measure = measure_cuda if args.device == "cuda" else measure_cpu
        print(json.dumps(measure(args.child, args)))  # noqa: T201 - the child's result line for the parent
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.device == "cuda":
            require_cuda()
        runs = measure_modes(args)
        report = summarize_cuda(runs, args) if args.device == "cuda" else summarize_cpu(runs, args)
    except BenchmarkError as err:
        print(err, file=sys.stderr)  # noqa: T201 - the one line a user reads
        return 2
    write_report(report, args.out, args.device)
    failed = [m for m, r in report["modes"].items() if r.get("error") and not r.get("oom")]
    if failed:
        logger.error("memory.py: %s failed (see 'error' in %s)", ", ".join(failed), args.out)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
