"""Peak memory and step time of one training step for the four tuning modes, on CPU or on a GPU.

Every mode runs in its own fresh process on the same batch (one mode's allocator state cannot
flatter another's), driven as training drives it: ``build_model``, for the frozen-backbone modes
``model.extract`` then ``model.adapter``, backward and an AdamW step.  ``memory_scaling`` runs the
same child (:func:`run_child`) for its points, and ``madapter-features`` (the head on cached input).

``--device cpu`` (ViT-B/16 random init, 8 frames, 224 px, 2 clips, fp32): the kernel's peak
resident set (``VmHWM``), reset through ``/proc/self/clear_refs`` right before a warm-up and a
timed step: what training adds on top of the built model and batch (and the total peak).  Within
``make bench``'s budget it is not measured twice: a ``memory_scaling.json`` beside ``--out`` of
this commit, ``--quick`` and setting supplies the points (``setup.measured_by`` says so).

``--device cuda`` (batch 32: the published table's setting in the Side4Video repository): a
half-precision backbone, the branch under bf16 autocast (fp16 without native bf16);
``torch.cuda.max_memory_allocated`` over the steps, weights, batch and optimiser state included
(what a training run reports).  A mode out of GPU memory is recorded as OOM with the GPU's size.

    python -m benchmarks.memory                          # CPU, writes results/memory.{json,png,md}
    python -m benchmarks.memory --quick                  # CPU, 112 px: the quick run of make bench
    python -m benchmarks.memory --device cuda            # GPU, writes results/memory_cuda.{json,png,md}
    python -m benchmarks.memory --backbone vit_tiny_patch16_224 --img-size 32 --frames 4 \\
        --out /tmp/memory.json                           # seconds-long smoke test of the script
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    RESULTS,
    ArgumentParser,
    Benchmark,
    BenchmarkError,
    child_result,
    div,
    fmt,
    git_state,
    positive,
    pyplot,
    reset_peak_rss,
    save,
    start_child,
    table,
    vm_kb,
)

logger = logging.getLogger("benchmarks.memory")

MODES = ("madapter", "inserted", "linear", "full")
FEATURES_MODE = "madapter-features"
"""Training ``madapter`` from the features cache (``train.source: features``): the head alone."""
QUICK_IMG_SIZE = 112
"""``--quick`` (CPU): 7x7 tokens instead of 14x14, the same model, ~4x cheaper steps."""
NUM_CLASSES = 400
PUBLISHED_GB = {"ST-Adapter": 28.8, "AIM": 35.2, "EVL": 17.9, "Side4Video": 18.8, "DiST": 12.7}
"""Training memory, ViT-B/16, 8 frames, batch 32, as re-measured in the Side4Video repository's table."""
PUBLISHED_SOURCE = "Side4Video repository (HJYao00/Side4Video), table of training memory, ViT-B/16, 8 frames, batch 32"
TARGET_GB = min(PUBLISHED_GB.values())
"""``madapter`` must train in less memory than every published method (DiST, 12.7 GB)."""
TARGETS_CPU = {"madapter_vs_full.step_peak_memory": 0.15, "madapter_vs_full.step_time": 0.35,
               "madapter_vs_inserted.step_peak_memory": 0.2}
"""The CPU ratios madapter must reach (upper bounds)."""
GIB = 2**30
DEVICE_DEFAULTS: dict[str, dict[str, Any]] = {
    # The CPU figures in docs/benchmarks.md: 2 clips, the default branch (width/temporal of params.yaml,
    # full level grids), fp32; one process per mode (make bench's budget; peaks vary ~10%).
    "cpu": {"batch": 2, "repeats": 1, "width": 192, "temporal": "conv", "out": RESULTS / "memory.json"},
    # The published setting (batch 32) and the branch of presets/kinetics400.yaml, the
    # configuration someone comparing with the published K400 numbers would train.
    "cuda": {"batch": 32, "repeats": 1, "width": 384, "temporal": "attention", "out": RESULTS / "memory_cuda.json"},
}
SCALING_SETUP_KEYS = {"img_size": "img_size", "clips": "batch", "width": "width", "temporal": "temporal"}
"""memory_scaling.json's setup keys that must equal this run's arguments for its points to be reused."""


# ----------------------------------------------------------------------------- child process side
def build(mode: str, args: argparse.Namespace, device: str):
    """The model of ``mode`` on ``device``, its AdamW optimiser and one fixed batch (seeded)."""
    import torch

    from madapter.config import ModelSection
    from madapter.models.build import build_model

    torch.manual_seed(0)
    cfg = ModelSection(backbone=args.backbone, img_size=args.img_size, num_frames=args.frames, tuning=mode,
                       width=args.width, temporal=args.temporal, half_precision=device == "cuda")
    model = build_model(cfg, num_classes=NUM_CLASSES).to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, args.frames, 3, args.img_size, args.img_size, generator=g).to(device)
    return model, optimizer, x, torch.randint(0, NUM_CLASSES, (args.batch,), generator=g).to(device)


def build_features(args: argparse.Namespace):
    """The ``madapter`` head as ``train.source: features`` builds it, its AdamW, one cached batch (what
    ``FeatureDataset`` feeds: float16-stored values as float32, full level grids) and the backbone's size.
    The backbone is only built on the ``meta`` device (shapes only): a features worker holds none."""
    import torch

    from madapter.config import ModelSection
    from madapter.models.backbone import Backbone
    from madapter.models.headless import build_feature_classifier

    torch.manual_seed(0)
    cfg = ModelSection(backbone=args.backbone, img_size=args.img_size, num_frames=args.frames, tuning="madapter",
                       width=args.width, temporal=args.temporal)
    with torch.device("meta"):
        backbone = Backbone(args.backbone, levels=None, img_size=args.img_size)
    (gh, gw), b, t = backbone.token_grid, args.batch, args.frames
    model = build_feature_classifier(cfg, backbone.levels, backbone.num_features, NUM_CLASSES,
                                     {"name": args.backbone}).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    g = torch.Generator().manual_seed(0)

    def cached(shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=g).to(torch.float16).to(torch.float32)  # stored fp16 -> fed fp32

    levels = [cached((b, t, gh, gw, info.channels)) for info in backbone.levels]
    inputs = (levels, cached((b, t, backbone.num_features)))
    y = torch.randint(0, NUM_CLASSES, (args.batch,), generator=g)
    return model, optimizer, inputs, y, sum(p.numel() for p in backbone.parameters())


def make_step(model, optimizer, x, y, amp: str) -> Callable[[], None]:
    """One training step as the Ray worker runs it (madapter/train/step.py): the frozen backbone outside
    the trained module, the rest under ``train.amp``'s autocast.  ``x`` is a clip batch, or
    ``(levels, pooled)`` cached features for the head alone (``forward(*inputs)``)."""
    import torch

    from madapter.models.precision import amp_autocast

    def forward() -> torch.Tensor:
        if isinstance(x, tuple):
            return model(*x)
        if model.backbone_frozen:
            features = model.extract(x)  # no_grad; half precision from model.half_precision
            return model.adapter(features.levels, features.pooled)
        return model(x)

    device = x[1].device if isinstance(x, tuple) else x.device

    def step() -> None:
        with amp_autocast(amp, device):
            logits = forward()
        loss = torch.nn.functional.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def timed_steps(step: Callable[[], None], steps: int, sync: Callable[[], None] = lambda: None) -> list[float]:
    """One warm-up step (it also allocates gradients and AdamW state), then the seconds of ``steps`` more."""
    step()
    sync()
    times = []
    for _ in range(steps):
        started = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - started)
    return times


def measure_cpu(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """Child process: peak RSS (VmHWM) of training on top of the built model and batch, and step time."""
    import torch

    from madapter.models.build import count_parameters

    if mode == FEATURES_MODE:
        model, optimizer, x, y, backbone_params = build_features(args)
        input_mb = sum(t.numel() * t.element_size() for t in [*x[0], x[1]]) / 2**20
    else:
        model, optimizer, x, y = build(mode, args, "cpu")
        backbone_params, input_mb = None, x.numel() * x.element_size() / 2**20
    step = make_step(model, optimizer, x, y, amp="none")
    # Baseline: weights and batch are resident, nothing of training exists yet; what the steps add
    # (gradients, optimiser state, activations kept for backward) is the tuning method's cost.
    rss_before = reset_peak_rss()
    times = timed_steps(step, args.steps)
    peak, counts = vm_kb("VmHWM"), count_parameters(model)
    return {
        "mode": mode, "step_s": sum(times) / len(times), "step_s_all": times, "peak_rss_mb": peak / 1024,
        "rss_before_step_mb": rss_before / 1024, "step_peak_mb": (peak - rss_before) / 1024,
        "trainable_params": counts["trainable"],
        "backbone_params": counts["backbone"] if backbone_params is None else backbone_params,
        "input_mb": input_mb, "torch_threads": torch.get_num_threads(),
    }


def measure_cuda(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """Child process: ``torch.cuda.max_memory_allocated`` of warm-up + measured steps; OOM is a result.
    The branch runs under bf16 where native, else fp16 (emulated bf16 distorts time, saves nothing)."""
    import torch

    from madapter.models.build import count_parameters

    device = torch.device("cuda")
    props = torch.cuda.get_device_properties(device)
    amp = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    result = {"mode": mode, "gpu": props.name, "gpu_total_bytes": props.total_memory, "branch_amp": amp,
              "oom": False}
    try:
        model, optimizer, x, y = build(mode, args, "cuda")
        step = make_step(model, optimizer, x, y, amp)
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        times = timed_steps(step, args.steps, lambda: torch.cuda.synchronize(device))
        peak, reserved = torch.cuda.max_memory_allocated(device), torch.cuda.max_memory_reserved(device)
    except (torch.cuda.OutOfMemoryError, RuntimeError) as err:
        text = str(err).strip()  # cuBLAS/cuDNN report a failed workspace allocation as a plain RuntimeError
        if not isinstance(err, torch.cuda.OutOfMemoryError) and "out of memory" not in text \
                and "ALLOC_FAILED" not in text:
            raise
        return {**result, "oom": True, "error": text.splitlines()[0] if text else "CUDA out of memory"}
    counts = count_parameters(model)
    return {
        **result, "peak_bytes": peak, "peak_gb": peak / GIB, "peak_reserved_gb": reserved / GIB,
        "model_and_batch_gb": before / GIB, "step_added_gb": (peak - before) / GIB,
        "step_s": sum(times) / len(times), "step_s_all": times,
        "trainable_params": counts["trainable"], "backbone_params": counts["backbone"],
    }


# ----------------------------------------------------------------------------- parent side
def run_child(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    """One fresh process measuring ``mode``; a crash becomes ``{"mode": mode, "error": <its last stderr line>}``."""
    record = child_result(start_child(
        "memory", "--device", args.device, "--backbone", args.backbone, "--img-size", str(args.img_size),
        "--frames", str(args.frames), "--batch", str(args.batch), "--steps", str(args.steps), "--width",
        str(args.width), "--temporal", args.temporal, "--child", mode))
    return {"mode": mode, **record} if "error" in record else record


def measure_modes(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """Every mode, ``args.repeats`` fresh processes each, in the order of :data:`MODES`."""
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for mode in MODES:
        for i in range(args.repeats):
            logger.info("measuring %s on %s (process %d/%d) ...", mode, args.device, i + 1, args.repeats)
            runs[mode].append(run_child(args, mode))
            logger.info("%s: %s", mode, describe(runs[mode][-1]))
    return runs


def describe(record: dict[str, Any]) -> str:
    """One human-readable phrase for a child's record (log lines)."""
    if record.get("oom"):
        return f"OOM on a {record['gpu_total_bytes'] / GIB:.1f} GB GPU"
    if record.get("error"):
        return f"failed ({record['error']})"
    if "peak_gb" in record:
        return f"{record['peak_gb']:.2f} GB peak allocated, {record['step_s']:.3f} s/step"
    return (f"{record['step_peak_mb']:.1f} MB step peak, {record['peak_rss_mb']:.1f} MB total peak, "
            f"{record['step_s']:.2f} s/step")


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


def _setup(args: argparse.Namespace) -> dict[str, Any]:
    """The setup keys both devices' reports start with."""
    return {"backbone": args.backbone, "weights": "random init", "img_size": args.img_size,
            "frames": args.frames}


def summarize_cpu(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace,
                  measured_by: str | None = None) -> dict[str, Any]:
    """The CPU report: median per mode (a failed mode keeps its error), ratios against ``full`` and
    ``inserted`` and whether each target is met (format of results/memory.json)."""
    keys = ("step_peak_mb", "step_s", "peak_rss_mb", "rss_before_step_mb")
    results = {m: next((x for x in r if "error" in x), None) or _median_record(r, keys, "step_peak_mb_all")
               for m, r in runs.items()}

    def ratios(mode: str, base: str) -> dict[str, float | None]:
        a, b = results[mode], results[base]
        return {key: div(a.get(field), b.get(field)) for key, field in
                (("step_peak_memory", "step_peak_mb"), ("total_peak_memory", "peak_rss_mb"), ("step_time", "step_s"))}

    pairs = {f"{m}_vs_full": ratios(m, "full") for m in MODES if m != "full"}
    pairs["madapter_vs_inserted"] = ratios("madapter", "inserted")
    targets = {}
    for key, bound in TARGETS_CPU.items():
        pair, quantity = key.split(".")
        value = pairs[pair][quantity]
        targets[key] = {"at_most": bound, "value": value, "met": None if value is None else value <= bound}
    return {
        "benchmark": "memory",
        "description": "one training step per tuning mode (forward + backward + AdamW), each mode in its own process",
        "setup": {**_setup(args), "clips": args.batch, "width": args.width, "temporal": args.temporal,
                  "level_pool": None, "backbone_chunk": _backbone_chunk(), "num_classes": NUM_CLASSES,
                  "warmup_steps": 1, "timed_steps": args.steps, "processes_per_mode": args.repeats,
                  "statistic": "median over processes" if args.repeats > 1 else "one process per mode",
                  "measured_by": measured_by or "this script", "device": "cpu", "dtype": "float32"},
        "modes": results,
        "ratios": pairs,
        "targets": targets,
    }


def summarize_cuda(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> dict[str, Any]:
    """The GPU report: peak per mode (OOM/failed kept as such), the published peers and the target."""
    # An OOM or a crash in any process is the mode's result: the step does not fit reliably.
    keys = ("peak_bytes", "peak_gb", "step_s")
    results = {m: next((x for x in r if "error" in x), None) or _median_record(r, keys, "peak_gb_all")
               for m, r in runs.items()}
    peak = {m: results[m].get("peak_bytes") for m in MODES}
    madapter = peak["madapter"]
    gpu = next((r for r in results.values() if "gpu" in r), {})
    return {
        "benchmark": "memory",
        "description": "one training step per tuning mode on one GPU (warm-up + measured step, AdamW), each mode in its own process",
        "setup": {**_setup(args), "batch": args.batch, "width": args.width, "temporal": args.temporal,
                  "num_classes": NUM_CLASSES, "backbone_chunk": _backbone_chunk(),
                  "backbone_precision": "model.half_precision: true (bf16 autocast, fp16 without native bf16)",
                  "branch_amp": gpu.get("branch_amp"), "warmup_steps": 1, "timed_steps": args.steps,
                  "processes_per_mode": args.repeats,
                  "statistic": "torch.cuda.max_memory_allocated over warm-up + measured steps, weights/batch/optimizer "
                               "state included; GB = 2^30 bytes; median over processes",
                  "device": "cuda", "gpu": gpu.get("gpu"), "gpu_total_gb": gpu.get("gpu_total_bytes", 0) / GIB,
                  "python": platform.python_version()},
        "modes": results,
        "ratios": {f"madapter_vs_{b}.peak": div(madapter, peak[b]) for b in ("full", "inserted", "linear")},
        "published_gb": PUBLISHED_GB,
        "published_source": PUBLISHED_SOURCE,
        "target": {
            "madapter_peak_below_gb": TARGET_GB,
            # Below 12.7e9 bytes: under the published figure whether it meant 10^9 or 2^30 bytes.
            "met": None if madapter is None else madapter < TARGET_GB * 1e9,
        },
    }


# ----------------------------------------------------------------------------- report (pure)
def _verdict(met: bool | None) -> str:
    return {True: "met", False: "NOT met", None: "not measured"}[met]


def markdown_cuda(report: dict[str, Any]) -> str:
    """The table for docs/benchmarks.md: measured modes, then the published peers, then the target."""
    s = report["setup"]
    through = {"madapter": "no", "linear": "no", "inserted": "yes (adapters inside)", "full": "yes (all weights)"}

    def peak(record: dict[str, Any]) -> str:
        if record.get("oom"):
            return f"OOM (GPU has {record['gpu_total_bytes'] / GIB:.1f} GB)"
        return f"{record['peak_gb']:.2f} GB" if "peak_gb" in record else f"failed: {record.get('error', '?')}"

    rows = [[f"`{mode}` (measured)", through[mode], peak(r), fmt(r.get("step_s"), ".3f", " s")]
            for mode, r in report["modes"].items()]
    rows += [[f"{name} (published)", "yes" if name in ("ST-Adapter", "AIM") else "no", f"{gb} GB", "-"]
             for name, gb in PUBLISHED_GB.items()]
    lines = [f"GPU figures: {s['gpu']} ({s['gpu_total_gb']:.1f} GB), {s['backbone']} random init, "
             f"{s['frames']} frames, {s['img_size']}x{s['img_size']}, batch {s['batch']}, backbone half "
             f"precision, branch {s['branch_amp']} autocast.", "",
             *table(["method", "gradient through backbone", "peak training memory", "step time"], rows),
             "", f"Target `madapter` < {TARGET_GB} GB (DiST): **{_verdict(report['target']['met'])}**."]
    return "\n".join(lines) + "\n"


def markdown_cpu(report: dict[str, Any]) -> str:
    """The CPU tables for docs/benchmarks.md: one row per mode, then the ratios with their targets."""
    modes = [[f"`{mode}`", f"failed: {r['error']}", "-", "-", "-"] if "error" in r else
             [f"`{mode}`", f"{r['trainable_params'] / 1e6:.2f} M", f"{r['step_peak_mb']:.0f} MB",
              f"{r['peak_rss_mb']:.0f} MB", f"{r['step_s']:.2f} s"] for mode, r in report["modes"].items()]
    ratios = []
    for pair, r in report["ratios"].items():
        cells = []
        for quantity in ("step_peak_memory", "total_peak_memory", "step_time"):
            target, cell = report["targets"].get(f"{pair}.{quantity}"), fmt(r[quantity], ".3f", "x")
            if target is not None:
                cell = f"**{cell}** (<= {target['at_most']}: {_verdict(target['met'])})"
            cells.append(cell)
        ratios.append([" / ".join(pair.split("_vs_")), *cells])
    head = ["tuning", "trainable params", "peak added by training", "total peak RSS", "step time"]
    lines = [*table(head, modes), "", *table([None, "training memory", "total memory", "step time"], ratios)]
    return "\n".join(lines) + "\n"


def markdown(report: dict[str, Any], json_path: str) -> str:
    """The report's tables for docs/benchmarks.md (CPU or GPU report), ending with its source and command."""
    table_text = markdown_cuda(report) if report["setup"]["device"] == "cuda" else markdown_cpu(report)
    measured_by = report["setup"].get("measured_by")
    by = f" (points measured by `{measured_by}`)" if measured_by and measured_by != "this script" else ""
    return table_text + f"\nSource: `{json_path}`, written by `{report.get('command', '?')}`{by}.\n"


def plot(report: dict[str, Any], path: Path) -> None:
    """The report's figure (CPU or GPU report) at ``path``."""
    (plot_cuda if report["setup"]["device"] == "cuda" else plot_cpu)(report, path)


def plot_cpu(report: dict[str, Any], path: Path) -> None:
    plt = pyplot()
    modes = {m: r for m, r in report["modes"].items() if "error" not in r}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    xs = range(len(modes))
    axes[0].bar([x - 0.2 for x in xs], [r["peak_rss_mb"] for r in modes.values()], width=0.4,
                label="total peak RSS (incl. weights)", color="#9ecae1")
    axes[0].bar([x + 0.2 for x in xs], [r["step_peak_mb"] for r in modes.values()], width=0.4,
                label="peak added by training", color="#3182bd")
    axes[0].set_ylabel("MB")
    axes[0].legend(fontsize=8)
    axes[0].set_title("Peak memory of one training step")
    axes[1].bar(xs, [r["step_s"] for r in modes.values()], color="#fd8d3c")
    axes[1].set_ylabel("seconds")
    axes[1].set_title("Step time")
    for ax in axes:
        ax.set_xticks(list(xs), list(modes))
    s = report["setup"]
    fig.suptitle(f"{s['backbone']} ({s['weights']}), {s['clips']} clips x {s['frames']} frames x {s['img_size']}px, CPU")
    save(fig, path)


def plot_cuda(report: dict[str, Any], path: Path) -> None:
    """Measured modes (blue; OOM drawn hatched at the GPU's size) next to the published peers (grey)."""
    plt = pyplot()
    s = report["setup"]
    measured = report["modes"].values()
    names = [*report["modes"], *PUBLISHED_GB]
    heights = [r.get("peak_gb", s["gpu_total_gb"] if r.get("oom") else 0.0) for r in measured]
    heights += list(PUBLISHED_GB.values())
    colors = ["#3182bd"] * len(measured) + ["#bdbdbd"] * len(PUBLISHED_GB)
    ooms = [bool(r.get("oom")) for r in measured] + [False] * len(PUBLISHED_GB)
    fig, ax = plt.subplots(figsize=(10, 4))
    for bar, oom in zip(ax.bar(range(len(names)), heights, color=colors), ooms, strict=True):
        bar.set_hatch("//" if oom else "")
        if oom:  # an OOM bar is drawn at the GPU's size: say so on it
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), "OOM", ha="center", va="bottom", fontsize=8)
    ax.axhline(TARGET_GB, color="#d62728", linestyle="--", linewidth=1, label=f"target: below DiST ({TARGET_GB} GB)")
    ax.set_xticks(range(len(names)), names, rotation=20)
    ax.set_ylabel("peak training memory (GB)")
    ax.legend(fontsize=8)
    ax.set_title(f"{s['gpu']}: {s['backbone']}, {s['frames']} frames, {s['img_size']}px, batch {s['batch']} "
                 "(blue: measured, grey: published, hatched: OOM)", fontsize=9)
    save(fig, path)


# ----------------------------------------------------------------------------- command line
def options(parser: ArgumentParser) -> None:
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--backbone", default="vit_base_patch16_224")
    parser.add_argument("--img-size", type=positive, help=f"frame size in pixels (224; --quick on cpu: {QUICK_IMG_SIZE})")
    parser.add_argument("--frames", type=positive, default=8)
    parser.add_argument("--batch", "--clips", dest="batch", type=positive, help="clips per step (cpu: 2, cuda: 32)")
    parser.add_argument("--width", type=positive, help="branch width d (cpu: 192 as params.yaml, cuda: 384 as the K400 preset)")
    parser.add_argument("--temporal", choices=("conv", "attention", "none"), help="temporal module (cpu: conv, cuda: attention)")
    parser.add_argument("--steps", type=positive, help="timed steps per process, after one warm-up step (cpu: 1, cuda: 2)")
    parser.add_argument("--repeats", type=positive, help="fresh processes per mode, median reported (1)")
    parser.add_argument("--no-reuse", action="store_true",
                        help="cpu: measure every mode here even if memory_scaling.json beside --out holds the points")


def resolve(args: argparse.Namespace, parser: ArgumentParser) -> None:
    """The device's defaults for what was not given (``--out``: results/memory.json or memory_cuda.json)."""
    defaults = {**DEVICE_DEFAULTS[args.device], "steps": 1 if args.device == "cpu" or args.quick else 2,
                "img_size": QUICK_IMG_SIZE if args.quick and args.device == "cpu" else 224}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)


def reusable_points(args: argparse.Namespace) -> tuple[dict[str, list[dict[str, Any]]], str] | None:
    """This setting's per-mode records from ``memory_scaling.json`` beside ``--out``, and its command:
    only from our commit (dirty or not: ``make bench`` rewrites results), the same ``--quick`` and setup,
    every mode measured at ``--backbone`` / ``--frames``.  Anything else: ``None``."""
    path = args.out.parent / "memory_scaling.json"
    if args.no_reuse or args.repeats != 1 or args.steps != 1 or not path.exists():
        return None
    try:
        scaling = json.loads(path.read_text())
        same = (scaling["git"]["commit"] == git_state()["commit"] and scaling["quick"] == args.quick
                and all(scaling["setup"][k] == getattr(args, a) for k, a in SCALING_SETUP_KEYS.items()))
        points = {(p["backbone"], p["frames"], p["mode"]): p for p in scaling["points"]}
    except (KeyError, TypeError, ValueError) as err:
        logger.warning("not reusing %s (%s: %s)", path, type(err).__name__, err)
        return None
    wanted = [(args.backbone, args.frames, m) for m in MODES]
    if not same or not all(k in points for k in wanted):
        logger.info("%s is not this commit/setting: measuring the modes here", path)
        return None
    logger.info("reusing the %s, %d-frame points of %s", args.backbone, args.frames, path)
    return {m: [points[k]] for m, k in zip(MODES, wanted, strict=True)}, scaling["command"]


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise BenchmarkError("memory.py: --device cuda needs a CUDA device (torch.cuda.is_available() is "
                                 "False); run it on a machine with an NVIDIA GPU, or use --device cpu")
        return summarize_cuda(measure_modes(args), args)
    reused = reusable_points(args)
    runs, measured_by = reused if reused else (measure_modes(args), None)
    return summarize_cpu(runs, args, measured_by)


def child(args: argparse.Namespace) -> dict[str, Any]:
    """This process is one mode's fresh process (``--child MODE``, or ``madapter-features``): its record."""
    return (measure_cuda if args.device == "cuda" else measure_cpu)(args.child, args)


BENCHMARK = Benchmark(
    "memory", __doc__, run, markdown, plot, packages=("torch", "timm", "numpy"),
    quick=f"cpu: {QUICK_IMG_SIZE} px; cuda: one timed step", minutes=(0.2, 0.2), options=options, resolve=resolve,
    child=child, failures=lambda report: [m for m, r in report["modes"].items() if r.get("error") and not r.get("oom")])

if __name__ == "__main__":
    raise SystemExit(BENCHMARK.main())
