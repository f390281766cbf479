"""What the frozen-feature cache buys: epoch time and step memory on cached features vs online, and
the features stage's extraction throughput (Ray Data actor pool vs a plain loop).

One run, one machine, the demo's model and recipe (``params.yaml``, random init) on a synthetic set
made by the real data stages in a scratch directory:

* **epoch time**: the real train stage (Ray Train, 1 CPU worker, MLflow to a scratch store) on the
  same videos with ``train.source: frames`` (online: the frozen backbone runs every step) and
  ``features`` (the head alone on the stored features): the worker's own ``epoch_time_s``, the
  median of epochs 2..N (the first warms up; a neighbour's burst hits single epochs).
* **step memory**: a fresh process per source builds the worker's model and data as a Ray Train
  worker does and runs two batches through its epoch function; the kernel's peak resident set
  (``VmHWM``, reset once model and batches are built): "added" is what the steps take on top
  (gradients, AdamW state, activations), "total" includes interpreter, torch and weights.
* **extraction**: the ``features`` stage itself (Ray Data over ``features.actors`` actors) against
  its own per-actor callable in a plain loop over the same work items, with the actor's torch
  threads.  Both include building the backbone, not starting Ray (timed apart), and report the
  rate after their first batch too (without the fixed start-up of an actor process).

``OMP_WAIT_POLICY=PASSIVE`` (``--omp-wait-policy``) is set for this process, its children and the
Ray workers: on a shared 2-core machine torch's OpenMP threads otherwise spin at every barrier (a
2-thread backbone forward ran 15-30x slower than 1 thread), measuring the neighbours.

    .venv/bin/python -m benchmarks.feature_cache               # ~4 min; benchmarks/results/feature_cache.{json,png,md}
    .venv/bin/python -m benchmarks.feature_cache --quick       # ~1.5 min: 8 videos per class, 3 epochs
    .venv/bin/python -m benchmarks.feature_cache --smoke --out /tmp/fc.json   # ~1-2 min: checks the script works
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

from benchmarks.harness import (
    REPO,
    ArgumentParser,
    Benchmark,
    child_result,
    data_stages,
    div,
    fmt,
    isolate,
    page,
    pyplot,
    recorded,
    reset_peak_rss,
    save,
    start_child,
    table,
    vm_kb,
)
from madapter.config import Params, apply_override, load_params, params_from_dict
from madapter.overrides import parse_overrides

logger = logging.getLogger("benchmarks.feature_cache")
SOURCES = ("frames", "features")
"""``train.source`` values: online (backbone every step) and cached."""
LABEL = {"frames": "online", "features": "cached"}
TARGET_SPEEDUP = 10.0
"""Issue 10: an epoch on cached features must be at least this much faster than online."""
STEP_BATCHES = 2
"""Batches run in the step-memory process: the first allocates gradients and AdamW state."""
RAY_CPUS = 2

QUICK = {"videos_per_class": 8, "epochs": 3}
"""``--quick``: the same model, recipe and measurements on a third of the videos, one epoch fewer."""
SMOKE: dict[str, dict[str, Any]] = {
    # The smallest honest configuration (seconds per stage): the test's, not a result to quote.
    "dataset": {"synthetic": {"classes": 2, "videos_per_class": 3, "num_frames": 12, "size": 40}},
    "decode": {"frames_per_video": 8, "size": 32, "shard_size": 8},
    "model": {"img_size": 32, "num_frames": 4, "width": 32},
    "features": {"train_views": 1, "batch_size": 4, "object_store_mb": 100},
    "train": {"epochs": 1, "batch_size": 2, "object_store_mb": 100},
    "evaluate": {"clips": 1, "crops": 1},
}


# ----------------------------------------------------------------------------- parameters and data
def bench_params(work: Path, source: str, args: argparse.Namespace) -> Params:
    """``params.yaml`` (the demo's model and recipe) with scratch paths, ``train.source`` and the
    benchmark's data size and epochs (``--smoke``: the tiny configuration instead)."""
    data = load_params(REPO / "params.yaml").model_dump(mode="json")
    for section, values in (SMOKE if args.smoke else {}).items():
        apply_override(data, section, values)  # a mapping merges into the section
    data["base"].update(data_dir=str(work / "data"), outputs_dir=str(work / f"out-{source}"))
    if not args.smoke:
        data["dataset"]["synthetic"]["videos_per_class"] = args.videos_per_class
        data["train"]["epochs"] = args.epochs
    for key, value in parse_overrides(args.set).items():  # e.g. a bigger backbone: how the ratio grows
        apply_override(data, key, value)
    data["dataset"]["name"] = "synthetic"
    data["scan"]["workers"] = data["decode"]["workers"] = 1
    data["train"].update(source=source, num_workers=1, cpus_per_worker=1.0, max_epochs_per_run=None,
                         loader_workers=0, use_gpu=False, storage_path=str(work / f"out-{source}" / "ray"),
                         run_name=f"bench-{LABEL[source]}")
    data["features"]["use_gpu"] = False
    data["mlflow"] = {"tracking_uri": f"sqlite:///{work / 'mlflow.db'}", "experiment": "feature-cache"}
    return params_from_dict(data, "benchmarks/feature_cache.py")


def prepare_data(params: Params) -> dict[str, int]:
    """download -> index -> scan -> decode with the real stage functions; videos per split of the store."""
    from madapter.data.store.frame_store import FrameStore, has_split
    from madapter.paths import StagePaths

    data_stages(params)
    frames = StagePaths.from_params(params).frames
    return {split: len(FrameStore(frames, split)) if has_split(frames, split) else 0 for split in ("train", "val", "test")}


def start_ray(omp_wait_policy: str) -> float:
    """A local Ray of :data:`RAY_CPUS` CPUs with the stages' job env (plus the OpenMP wait policy);
    returns its start-up seconds.  The stages reuse a running Ray (``madapter.ray_runtime.start_ray``)."""
    import ray

    from madapter.ray_runtime import worker_runtime_env

    runtime_env = worker_runtime_env()
    runtime_env["env_vars"] = {**runtime_env["env_vars"], "OMP_WAIT_POLICY": omp_wait_policy}
    started = time.perf_counter()
    ray.init(address="local", num_cpus=RAY_CPUS, object_store_memory=256 * 2**20, include_dashboard=False,
             runtime_env=runtime_env)
    return time.perf_counter() - started


# ----------------------------------------------------------------------------- extraction
def rates(seconds: float, ticks: list[tuple[float, int]], views: int) -> dict[str, Any]:
    """Views/s of a whole extraction and, from the ``(seconds, views)`` of every batch when it was in
    hand, the rate after the first: the steady rate, free of the fixed start-up before it."""
    first_s, first_views = ticks[0] if ticks else (None, 0)
    steady, span = views - first_views, (ticks[-1][0] - first_s) if ticks else 0.0
    return {"views": views, "seconds": seconds, "views_per_s": views / seconds, "first_batch_s": first_s,
            "steady_views_per_s": steady / span if steady and span > 0 else None}


def ray_data_extraction(params: Params) -> dict[str, Any]:
    """The features stage as ``dvc repro`` runs it (in this process, on the running Ray); its views/s.  The
    batches its driver receives are timed by wrapping ``stage._rows`` meanwhile (each passes unchanged)."""
    from madapter.data.features import stage
    from madapter.data.features.feature_store import read_features_meta

    started, ticks, original = time.perf_counter(), [], stage._rows

    def rows(*args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        for batch in original(*args, **kwargs):
            ticks.append((time.perf_counter() - started, len(batch["view"])))
            yield batch

    with mock.patch.object(stage, "_rows", rows):
        root = stage.extract_features(params)
    seconds = time.perf_counter() - started
    meta = read_features_meta(root)
    views = sum(split["views_total"] for split in meta["splits"].values())
    return {**rates(seconds, ticks, views), "actors": params.features.actors, "bytes": meta["bytes"],
            "bytes_per_view": meta["bytes"] / max(1, views),
            "views_per_split": {s: v["views_total"] for s, v in meta["splits"].items()},
            "includes": "driver dry run + actor start (backbone build) + extraction + writing shards; not ray.init"}


def plain_loop_extraction(params: Params) -> tuple[dict[str, Any], Any]:
    """The stage's own per-actor callable over the same plan, work items, views and backbone, with
    the torch threads the stage's actor got, in a plain loop (no Ray); views/s, and the first work
    item's output (checked against the stored features)."""
    import numpy as np
    import torch

    from madapter.data.features.extractor import BackboneExtractor
    from madapter.data.features.stage import _actor_cpus, plan_videos, work_items
    from madapter.data.store.frame_store import read_store_meta
    from madapter.paths import StagePaths

    paths = StagePaths.from_params(params)
    plan = plan_videos(params, paths)
    classes = len(read_store_meta(paths.frames.resolve())["classes"])
    threads = _actor_cpus(params.features.actors)
    driver_threads = torch.get_num_threads()
    started, ticks, first = time.perf_counter(), [], None
    try:
        extractor = BackboneExtractor(params.model_dump(mode="json"), plan, classes, threads)
        for item in work_items(plan, params.features.batch_size):
            out = extractor({key: np.array([value]) for key, value in item.items()})
            ticks.append((time.perf_counter() - started, len(out["view"])))
            first = out if first is None else first
        timing = rates(time.perf_counter() - started, ticks, sum(n for _, n in ticks))
    finally:
        torch.set_num_threads(driver_threads)  # the extractor set this process's threads
    return {**timing, "torch_threads": threads, "includes": "backbone build + extraction (no writing)"}, first


def same_values(params: Params, first: dict[str, Any]) -> bool:
    """The plain loop's first train view equals the stored one (fp16 tolerance): the same clips were timed."""
    import numpy as np

    from madapter.data.features.feature_store import FeatureStore
    from madapter.paths import StagePaths

    store = FeatureStore(StagePaths.from_params(params).features, str(first["split"][0]))
    _, pooled, _ = store.view(int(first["video"][0]), int(first["view"][0]))
    return bool(np.allclose(first["pooled"][0].astype(np.float32), pooled.astype(np.float32), rtol=1e-2, atol=1e-2))


# ----------------------------------------------------------------------------- training
def train_run(params: Params) -> dict[str, Any]:
    """The real train stage: the worker's epoch numbers (median of epochs 2..N), the stage's wall time."""
    from madapter.train.driver import train

    started = time.perf_counter()
    history = train(params).history
    measured = history[1:] or history
    return {"epoch_time_s": statistics.median(h["epoch_time_s"] for h in measured),
            "epoch_time_s_all": [h["epoch_time_s"] for h in history],
            "clips_per_s": statistics.median(h["clips_per_s"] for h in measured),
            "val_time_s": statistics.median(h["val_time_s"] for h in measured),
            "worker_peak_rss_mb": max(h["peak_memory_mb"] for h in history), "val_acc": history[-1]["val_acc"],
            "train_loss_all": [h["train_loss"] for h in history],
            "epochs": len(history), "measured_epochs": [int(h["epoch"]) for h in measured],
            "stage_wall_s": time.perf_counter() - started}


# ----------------------------------------------------------------------------- step memory (child process)
def measure_step(params_file: Path) -> dict[str, Any]:
    """Child process: peak RSS of :data:`STEP_BATCHES` training steps of a worker's model and data."""
    import torch
    from torch.utils.data import DataLoader

    from madapter.paths import StagePaths
    from madapter.train.optim import Optimisation
    from madapter.train.source import build_source, train_data
    from madapter.train.step import train_epoch

    params = params_from_dict(json.loads(params_file.read_text()), str(params_file))
    torch.set_num_threads(max(1, int(params.train.cpus_per_worker)))  # as a Ray Train worker (loop.Worker.join)
    data = train_data(params, StagePaths.from_params(params))  # what the driver hands a worker
    torch.manual_seed(params.base.seed)
    source = build_source(params, data)
    model = source.model.train()
    loader = DataLoader(source.train_ds, batch_size=params.train.batch_size, shuffle=False, collate_fn=source.collate)
    batches = list(itertools.islice(loader, STEP_BATCHES))
    device = torch.device("cpu")
    opt = Optimisation.build(model, params.train, len(batches), device)

    # Inputs -> logits as madapter.train.loop.data_parallel builds it for one worker, without DDP
    # (which needs a Ray Train session and is a pass-through for one process).
    def forward(x):
        features = model.extract(x)  # frozen: no_grad
        return model.adapter(features.levels, features.pooled)

    step = forward if getattr(model, "backbone_frozen", False) else model
    rss_before = reset_peak_rss()
    sums = train_epoch(step, model, batches, opt, 1, params.train.amp, device, lambda _: None)
    peak = vm_kb("VmHWM")
    return {"source": params.train.source, "model": type(model).__name__,
            "parameters": sum(p.numel() for p in model.parameters()),
            "clips_per_step": params.train.batch_size, "steps": len(batches), "clips_trained": int(sums.seen),
            "rss_before_mb": rss_before / 1024, "peak_rss_mb": peak / 1024, "step_added_mb": (peak - rss_before) / 1024,
            "torch_threads": torch.get_num_threads()}


def step_memory(params: dict[str, Params], work: Path, omp_wait_policy: str) -> dict[str, dict[str, Any]]:
    """:func:`measure_step` for every source, each in a fresh process (its own peak, no allocator state
    from earlier runs), side by side: a process's peak RSS is its own, whoever shares the CPUs (which is
    why no step time is reported from them)."""
    procs = {}
    for source, source_params in params.items():
        params_file = work / f"step-{source}.json"
        params_file.write_text(json.dumps(source_params.model_dump(mode="json")))
        procs[source] = start_child("feature_cache", "--omp-wait-policy", omp_wait_policy, "--child", str(params_file))
    results = {source: child_result(proc) for source, proc in procs.items()}
    for source, result in results.items():
        if "error" in result:
            raise RuntimeError(f"the step-memory process for train.source {source} failed ({result['error']})")
    return results


# ----------------------------------------------------------------------------- report
def setup(params: Params, videos: dict[str, int], args: argparse.Namespace) -> dict[str, Any]:
    m, t, f, synthetic = params.model, params.train, params.features, params.dataset.synthetic
    return {
        "configuration": args.configuration, "recipe": "the demo model and recipe (params.yaml)",
        "backbone": m.backbone, "pretrained": m.pretrained, "img_size": m.img_size, "num_frames": m.num_frames,
        "tuning": m.tuning, "width": m.width, "temporal": m.temporal, "fusion": m.fusion, "levels": m.levels,
        "tokens_per_frame": (m.img_size // 16) ** 2,  # ViT patch 16
        "dataset": f"synthetic {synthetic.classes} classes x {synthetic.videos_per_class} videos",
        "videos": videos, "epochs": t.epochs, "batch_size": t.batch_size, "ray_train_workers": t.num_workers,
        "cpus_per_worker": t.cpus_per_worker, "features_dtype": f.dtype, "train_views": f.train_views,
        "eval_views": params.evaluate.clips * params.evaluate.crops, "features_batch_size": f.batch_size,
        "ray_cpus": RAY_CPUS, "omp_wait_policy": args.omp_wait_policy,
    }


def build_report(parts: dict[str, Any]) -> dict[str, Any]:
    """The JSON's numbers (the harness adds the provenance keys); with a failed part,
    what was measured and the errors (the comparisons need both sides)."""
    if parts["errors"]:
        return {"setup": parts["setup"], "errors": parts["errors"],
                "partial": {k: parts.get(k) for k in ("extraction", "training", "step_memory")}, "headline": None}
    online, cached = parts["training"]["frames"], parts["training"]["features"]
    mem_online, mem_cached = parts["step_memory"]["frames"], parts["step_memory"]["features"]
    ray_data, plain = parts["extraction"]["ray_data"], parts["extraction"]["plain_loop"]
    speedup = online["epoch_time_s"] / cached["epoch_time_s"]
    saved = online["epoch_time_s"] - cached["epoch_time_s"]
    losses = zip(online["train_loss_all"], cached["train_loss_all"], strict=True)
    report = {
        "setup": parts["setup"],
        "errors": {},
        "training": {
            "online": online, "cached": cached, "speedup_epoch": speedup,
            "target_speedup": TARGET_SPEEDUP, "target_met": speedup >= TARGET_SPEEDUP,
            "break_even_epochs": ray_data["seconds"] / saved if saved > 0 else None,
            # Same views, same initial head, same order: the two runs' losses differ only by the fp16 storage.
            "train_loss_max_abs_diff": max(abs(a - b) for a, b in losses),
            "break_even": ("features stage seconds / seconds saved per epoch: epochs after which the cache "
                           "has paid for itself"),
            "measure": ("median of the Ray Train worker's epoch_time_s over epochs 2..N (training batches only; "
                        "the first epoch warms up), same training videos"),
        },
        "step_memory": {
            "online": mem_online, "cached": mem_cached,
            "ratio_added": mem_cached["step_added_mb"] / mem_online["step_added_mb"],
            "ratio_total": mem_cached["peak_rss_mb"] / mem_online["peak_rss_mb"],
            "measure": (f"kernel peak RSS (VmHWM) of a fresh process running {STEP_BATCHES} training steps "
                        "(madapter.train.step.train_epoch on build_source's model and data); added = peak minus "
                        "RSS once model and batches are built; not torch's allocator"),
        },
        "extraction": {
            "ray_data": ray_data, "plain_loop": plain,
            "ratio_ray_data_vs_plain": ray_data["views_per_s"] / plain["views_per_s"],
            "plain_loop_matches_stored": parts["extraction"]["matches"],
            "ray_init_s": parts["ray_init_s"],
            "unit": "views/s: one view = one clip of num_frames frames through the frozen backbone",
        },
    }
    report["headline"] = headline(report)
    return report


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The numbers the docs' prose quotes, derived from the measured ones.  Per clip, the cached epoch is
    the branch and head alone, the online one adds the frozen forward: the difference is the cache's gain."""
    tr, mem, ex = report["training"], report["step_memory"], report["extraction"]
    online_ms, cached_ms = 1e3 / tr["online"]["clips_per_s"], 1e3 / tr["cached"]["clips_per_s"]
    rd, pl = ex["ray_data"], ex["plain_loop"]
    return {
        "speedup_epoch": tr["speedup_epoch"], "epoch_time_ratio": 1 / tr["speedup_epoch"],
        "target_speedup": tr["target_speedup"], "target_met": tr["target_met"],
        "train_loss_max_abs_diff": tr["train_loss_max_abs_diff"],
        "online_ms_per_clip": online_ms, "cached_ms_per_clip": cached_ms,
        "frozen_forward_ms_per_clip": online_ms - cached_ms, "cached_fraction_of_online_step": cached_ms / online_ms,
        "step_added_ratio": mem["ratio_added"],
        "rss_before_step_mb": {LABEL[s]: mem[LABEL[s]]["rss_before_mb"] for s in SOURCES},
        "worker_parameters_m": {LABEL[s]: mem[LABEL[s]]["parameters"] / 1e6 for s in SOURCES},
        "worker_peak_rss_diff_mb": tr["cached"]["worker_peak_rss_mb"] - tr["online"]["worker_peak_rss_mb"],
        "features_stage_s": rd["seconds"], "break_even_epochs": tr["break_even_epochs"],
        "first_batch_s": {"ray_data": rd["first_batch_s"], "plain_loop": pl["first_batch_s"]},
        "extraction_ratio_ray_data_vs_plain": ex["ratio_ray_data_vs_plain"],
        "extraction_steady_ratio_ray_data_vs_plain": div(rd["steady_views_per_s"], pl["steady_views_per_s"]),
    }


def markdown(report: dict[str, Any], json_path: str) -> str:
    """The table of docs/benchmarks.md, from the report alone."""
    if report["errors"]:
        return page(table(["part", "failed"], report["errors"].items()), report, json_path)
    tr, mem, ex, s, h = (report[k] for k in ("training", "step_memory", "extraction", "setup", "headline"))
    on, ca, mo, mc = tr["online"], tr["cached"], mem["online"], mem["cached"]
    rd, pl = ex["ray_data"], ex["plain_loop"]
    epochs, met = on["measured_epochs"], "met" if tr["target_met"] else "NOT met"
    span = f"{epochs[0]}-{epochs[-1]}" if len(epochs) > 1 else str(epochs[0])
    training = [
        [f"epoch time ({s['videos']['train']} clips; median of epochs {span})", f"{on['epoch_time_s']:.2f} s",
         f"{ca['epoch_time_s']:.2f} s", f"**{1 / tr['speedup_epoch']:.3f}x** ({tr['speedup_epoch']:.1f}x "
         f"faster; target >= {tr['target_speedup']:.0f}x: {met})"],
        ["training clips/s", f"{on['clips_per_s']:.1f}", f"{ca['clips_per_s']:.1f}", None],
        [f"training loss, epochs 1-{len(on['train_loss_all'])}", _losses(on["train_loss_all"]),
         _losses(ca["train_loss_all"]), f"largest difference {tr['train_loss_max_abs_diff']:.1e}"],
        [f"peak RSS added by {mo['steps']} steps of {mo['clips_per_step']} clips",
         f"{mo['step_added_mb']:.0f} MB", f"{mc['step_added_mb']:.0f} MB", f"{mem['ratio_added']:.2f}x"],
        ["process peak RSS during those steps", f"{mo['peak_rss_mb']:.0f} MB", f"{mc['peak_rss_mb']:.0f} MB",
         f"{mem['ratio_total']:.2f}x"],
        ["Ray Train worker peak RSS (whole run)", f"{on['worker_peak_rss_mb']:.0f} MB",
         f"{ca['worker_peak_rss_mb']:.0f} MB", f"{ca['worker_peak_rss_mb'] / on['worker_peak_rss_mb']:.2f}x"],
        ["model parameters in the worker", f"{mo['parameters'] / 1e6:.2f} M",
         f"{mc['parameters'] / 1e6:.2f} M", None],
    ]
    sides = {f"features stage, Ray Data ({rd['actors']} actor x {pl['torch_threads']} threads)": rd,
             f"plain loop, same extractor, {pl['torch_threads']} threads": pl}
    extraction = [
        *([name, f"{x['views_per_s']:.1f}", f"{x['seconds']:.1f}", fmt(x["first_batch_s"], ".1f", " s"),
           fmt(x["steady_views_per_s"], ".1f")] for name, x in sides.items()),
        ["Ray Data / plain loop", f"{ex['ratio_ray_data_vs_plain']:.2f}x", None, None,
         fmt(div(rd["steady_views_per_s"], pl["steady_views_per_s"]), ".2f", "x")],
    ]
    return page([
        *table([None, "online (`train.source: frames`)", "cached (`train.source: features`)",
                "cached / online"], training),
        "",
        f"Break-even: the features stage took {rd['seconds']:.0f} s, "
        + (f"repaid after {tr['break_even_epochs']:.1f} epochs at the seconds saved per epoch."
           if tr["break_even_epochs"] is not None else "never repaid (no epoch was faster)."),
        "",
        *table(["extraction of the same views", "views/s (all)", "seconds", "first batch after",
                "views/s after the first batch"], extraction),
        "",
        f"{rd['views']} views ({', '.join(f'{k}: {v}' for k, v in rd['views_per_split'].items())}); stored "
        f"{rd['bytes'] / 1e6:.1f} MB ({rd['bytes_per_view'] / 1e3:.1f} kB per view, {s['features_dtype']}); "
        f"plain loop output equals the stored features: {'yes' if ex['plain_loop_matches_stored'] else 'NO'}. "
        f"Ray start-up ({ex['ray_init_s']:.1f} s) is in neither.",
        "",
        f"Per training clip: online {h['online_ms_per_clip']:.0f} ms, cached {h['cached_ms_per_clip']:.0f} "
        f"ms (the branch and head alone), so the frozen forward the cache removes is "
        f"{h['frozen_forward_ms_per_clip']:.0f} ms ({s['tokens_per_frame']} tokens per frame at "
        f"{s['img_size']} px); the cached step is {h['cached_fraction_of_online_step']:.2f} of the online "
        "one.",
    ], report, json_path)


def _losses(values: list[float]) -> str:
    return ", ".join(f"{v:.4f}" for v in values)


def plot(report: dict[str, Any], path: Path) -> None:
    """Three panels: epoch time, step memory, extraction throughput (a failed run: its errors, as text)."""
    plt = pyplot()
    if report["errors"]:
        fig, ax = plt.subplots(figsize=(8, 2))
        ax.axis("off")
        ax.text(0, 0.5, "\n".join(f"{part}: {err}" for part, err in report["errors"].items()), fontsize=8, va="center")
        save(fig, path, tight=False)
        return

    tr, mem, ex, s = report["training"], report["step_memory"], report["extraction"], report["setup"]
    grey, green = "#999999", "#2a7f62"
    fig, (ax_time, ax_mem, ax_ex) = plt.subplots(1, 3, figsize=(12, 3.8))
    ax_time.bar(["online", "cached"], [tr["online"]["epoch_time_s"], tr["cached"]["epoch_time_s"]], color=[grey, green])
    ax_time.set_ylabel("seconds per training epoch")
    ax_time.set_title(f"epoch: {tr['speedup_epoch']:.1f}x faster (target {tr['target_speedup']:.0f}x)", fontsize=10)
    xs = [0, 1]
    for offset, key, label, alpha in ((-0.2, "peak_rss_mb", "process peak RSS", 0.45),
                                      (0.2, "step_added_mb", "added by the steps", 1.0)):
        ax_mem.bar([x + offset for x in xs], [mem["online"][key], mem["cached"][key]], width=0.4, label=label,
                   color=[grey, green], alpha=alpha)
    ax_mem.set_xticks(xs, ["online", "cached"])
    ax_mem.set_ylabel("MB (kernel VmHWM)")
    ax_mem.set_ylim(0, 1.3 * max(mem["online"]["peak_rss_mb"], mem["cached"]["peak_rss_mb"]))  # room for the legend
    ax_mem.legend(fontsize=8, loc="upper center", ncol=2)
    ax_mem.set_title(f"training step memory: {mem['ratio_added']:.2f}x added", fontsize=10)
    sides = (ex["ray_data"], ex["plain_loop"])
    for offset, key, label, alpha in ((-0.2, "views_per_s", "whole run", 1.0),
                                      (0.2, "steady_views_per_s", "after the first batch", 0.45)):
        ax_ex.bar([x + offset for x in xs], [side[key] or 0.0 for side in sides], width=0.4, label=label,
                  color=[green, grey], alpha=alpha)
    ax_ex.set_xticks(xs, ["Ray Data\n(features stage)", "plain loop"])
    ax_ex.set_ylabel("views/s")
    ax_ex.set_ylim(0, 1.3 * max(side[key] or 0.0 for side in sides for key in ("views_per_s", "steady_views_per_s")))
    ax_ex.legend(fontsize=8, loc="upper center", ncol=2)
    ax_ex.set_title(f"extraction: {ex['ratio_ray_data_vs_plain']:.2f}x the plain loop", fontsize=10)
    fig.suptitle(f"Cached frozen features vs online, {s['backbone']} random init @{s['img_size']}px, T={s['num_frames']}, "
                 f"{s['tuning']} width {s['width']}, CPU (shared 2-core machine, one run)", fontsize=10)
    save(fig, path)


# ----------------------------------------------------------------------------- driver
def run(args: argparse.Namespace) -> dict[str, Any]:
    """Everything, in one process and one Ray: data, extraction both ways, both training runs, step memory.
    A failed part is recorded (``errors``), the later ones still run (the cached one needs the features)."""
    # Before torch (and its libgomp) loads in this process; children and Ray workers inherit it.
    os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy
    isolate()
    import ray

    work = args.work
    params = {source: bench_params(work, source, args) for source in SOURCES}
    logger.info("data: download -> index -> scan -> decode under %s", work)
    videos = prepare_data(params["features"])
    parts: dict[str, Any] = {"setup": setup(params["features"], videos, args), "errors": {}}
    parts["ray_init_s"] = start_ray(args.omp_wait_policy)
    try:
        with recorded(parts["errors"], "extraction"):
            logger.info("extraction: the features stage (Ray Data)")
            ray_data = ray_data_extraction(params["features"])
            logger.info("extraction: the same work items in a plain loop")
            plain, first = plain_loop_extraction(params["features"])
            parts["extraction"] = {"ray_data": ray_data, "plain_loop": plain,
                                   "matches": same_values(params["features"], first)}
        parts["training"] = {}
        for source in ("features", "frames"):
            with recorded(parts["errors"], f"training ({source})"):
                logger.info("training: train.source %s (%s)", source, LABEL[source])
                parts["training"][source] = train_run(params[source])
    finally:
        ray.shutdown()
    with recorded(parts["errors"], "step memory"):
        logger.info("step memory: one fresh process per train.source")
        parts["step_memory"] = step_memory(params, work, args.omp_wait_policy)
    return build_report(parts)


def child(args: argparse.Namespace) -> dict[str, Any]:
    """This process is a step-memory process (``--child PARAMS_FILE``): its record."""
    os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy  # before torch loads
    return measure_step(Path(args.child))


def options(parser: ArgumentParser) -> None:
    parser.add_argument("--videos-per-class", type=int, default=24,
                        help="synthetic videos per class (2/3 train, 1/6 val, 1/6 test); classes as params.yaml")
    parser.add_argument("--epochs", type=int, default=4,
                        help="epochs per training run; the median of epochs 2..N is reported")
    parser.add_argument("--omp-wait-policy", choices=("PASSIVE", "ACTIVE"), default="PASSIVE",
                        help="OpenMP wait policy of every process (see the module docstring)")
    parser.add_argument("--set", "-S", action="append", default=[], metavar="KEY=VALUE",
                        help="override a params.yaml key for both sources, e.g. -S model.backbone=vit_small_patch16_224")


def resolve(args: argparse.Namespace, parser: ArgumentParser) -> None:
    if args.quick:
        args.videos_per_class, args.epochs = QUICK["videos_per_class"], QUICK["epochs"]
    if args.epochs < 1 or args.videos_per_class < 3:
        parser.error("--epochs must be >= 1 and --videos-per-class >= 3")


BENCHMARK = Benchmark(
    "feature_cache", __doc__, run, markdown, plot, packages=("torch", "timm", "ray", "numpy", "mlflow"),
    quick=f"{', '.join(f'{k} {v}' for k, v in QUICK.items())}; same measurements", minutes=(2.5, 1.5),
    options=options, resolve=resolve, smoke=True, work_dir=True, child=child)

if __name__ == "__main__":
    raise SystemExit(BENCHMARK.main())
