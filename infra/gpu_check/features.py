"""The checks of the features path: GPU extraction actors, training the head alone on the GPU, and the
cached evaluation against the full model on the source videos."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from infra.gpu_check.common import (
    FEATURES_OUT,
    MAX_SCORE_GAP,
    MIN_COSINE,
    MIN_TOP1_AGREEMENT,
    SERVED_MIN_MIB,
    TIMEOUTS,
    CheckFailed,
    Context,
)
from infra.gpu_check.device import cosine, cuda_peak_of, device_memory_growth, require_on_gpu, softmax
from infra.gpu_check.frames import expect_recorded, expect_trained, run_tags
from infra.gpu_check.process import run_logged
from infra.gpu_check.settings import feature_cli, features_params


def cpu_reference_views(params: Any) -> dict[str, Any]:
    """The first work item's views recomputed on the CPU in fp32, by the stage's own actor class."""
    import numpy as np
    import torch

    from madapter.data.features.extractor import BackboneExtractor
    from madapter.data.features.stage import plan_videos, work_items
    from madapter.data.store.frame_store import read_store_meta
    from madapter.paths import StagePaths

    cpu = params.model_copy(update={"features": params.features.model_copy(update={"use_gpu": False})})
    paths = StagePaths.from_params(cpu)
    plan = plan_videos(cpu, paths)
    classes = len(read_store_meta(paths.frames.resolve())["classes"])
    threads = torch.get_num_threads()
    try:
        extractor = BackboneExtractor(cpu.model_dump(mode="json"), plan, classes, threads)
        if extractor.device.type != "cpu":
            raise CheckFailed(f"the CPU reference extractor runs on {extractor.device} (features.use_gpu was false)")
        item = work_items(plan, cpu.features.batch_size)[0]
        return extractor({key: np.array([value]) for key, value in item.items()})
    finally:
        torch.set_num_threads(threads)  # the extractor set this process's threads


def compare_with_reference(params: Any, reference: dict[str, Any]) -> str:
    """The stored (GPU) views of ``reference``'s rows: declared dtype and shapes, values close to the CPU's."""
    import numpy as np

    from madapter.data.features.feature_store import FeatureStore, read_features_meta
    from madapter.paths import StagePaths

    root = StagePaths.from_params(params).features
    meta = read_features_meta(root)
    dtype = np.dtype(meta["dtype"])
    worst = 1.0
    for row in range(len(reference["view"])):
        split, video, view = str(reference["split"][row]), int(reference["video"][row]), int(reference["view"][row])
        levels, pooled, _ = FeatureStore(root, split).view(video, view)
        stored = {"pooled": pooled, **{f"level{k}": level for k, level in enumerate(levels)}}
        for name, array in stored.items():
            expected = reference[name][row]
            if array.dtype != dtype or array.shape != expected.shape:
                raise CheckFailed(f"{root}: {split} video {video} view {view} {name} is {array.dtype} {array.shape}, "
                                  f"expected {dtype} {expected.shape} (features.json dtype, CPU recompute shape)")
            worst = min(worst, cosine(array, expected))
    if worst < MIN_COSINE:
        raise CheckFailed(f"{root}: GPU features differ from the same views recomputed on the CPU (cosine {worst:.4f} "
                          f"< {MIN_COSINE}): wrong device placement or dtype in the extraction actor")
    return f"{len(reference['view'])} views {dtype} match a CPU fp32 recompute (min cosine {worst:.4f})"


def check_features(ctx: Context) -> str:
    """The features stage with ``features.use_gpu: true`` (Ray Data GPU actors): ran on a GPU, values right."""
    from madapter.data.features.feature_store import read_features_meta
    from madapter.paths import StagePaths

    started = time.monotonic()
    _, grew = device_memory_growth(
        lambda: run_logged(feature_cli(ctx, "features"), ctx.repo, ctx.logs / "features.log", TIMEOUTS["features"]))
    seconds = time.monotonic() - started
    params = features_params(ctx)
    meta = read_features_meta(StagePaths.from_params(params).features)
    if not meta.get("enabled") or meta.get("cache_key", {}).get("use_gpu") is not True:
        raise CheckFailed(f"features.json says enabled={meta.get('enabled')}, use_gpu="
                          f"{meta.get('cache_key', {}).get('use_gpu')}: the stage did not extract with GPU actors")
    computed = meta.get("computed_on", {})
    if computed.get("device") != "cuda" or computed.get("backbone_precision") not in ("bf16", "fp16"):
        raise CheckFailed(f"features.json says the actors computed the features on {computed.get('device')!r} in "
                          f"{computed.get('backbone_precision')!r}, expected cuda in bf16/fp16 (model.half_precision)")
    if grew < SERVED_MIN_MIB:
        raise CheckFailed(f"device memory in use grew by only {grew:.0f} MiB while the features stage ran "
                          f"(>= {SERVED_MIN_MIB} MiB expected): the Ray Data actors did not run the backbone on a GPU")
    views = sum(split["views_total"] for split in meta["splits"].values())
    matched = compare_with_reference(params, cpu_reference_views(params))
    return (f"{views} views in {seconds:.0f} s with GPU actors (device memory +{grew:.0f} MiB), "
            f"{meta['bytes'] / 2**20:.1f} MiB stored; {matched}")


def check_train_features(ctx: Context) -> str:
    """Ray Train on the cached features with ``train.use_gpu: true``: the head alone, on the GPU."""
    from madapter.train.identity import ray_run_name

    started = time.monotonic()
    run_logged(feature_cli(ctx, "train"), ctx.repo, ctx.logs / "train-features.log", TIMEOUTS["train_features"])
    params = features_params(ctx)
    out = ctx.repo / FEATURES_OUT
    run = json.loads((out / "train" / "run.json").read_text())
    epochs = params.train.epochs
    if not run["completed"] or run["epochs_done"] != epochs:
        raise CheckFailed(f"training on features stopped after {run['epochs_done']}/{epochs} epochs "
                          f"(log: {ctx.logs / 'train-features.log'})")
    expect_trained(params, "features", "FeatureClassifier")  # the head alone
    status = json.loads((Path(params.train.storage_path).resolve() / ray_run_name(params) / "workers"
                         / "rank-0.json").read_text())
    tags = run_tags(ctx, run["run_id"], params)
    trained = expect_recorded("training run's MLflow tags",
                              {k.removeprefix("train."): v for k, v in tags.items() if k.startswith("train.")}, ctx.amp)
    last = run["history"][-1]
    head_mib = status["model_parameters"] * 4 / 2**20
    # On CUDA, history's peak_memory_mb is the worker's allocator peak: the head's weights, gradients,
    # AdamW state and batches.  A head left on the CPU would show only the reductions' few bytes.
    if last["peak_memory_mb"] < head_mib:
        raise CheckFailed(f"the worker's CUDA allocator peaked at {last['peak_memory_mb']:.1f} MiB, less than the head's "
                          f"{head_mib:.1f} MiB of fp32 weights: the head did not train on the GPU")
    if not math.isfinite(last["train_loss"]) or not math.isfinite(last["val_loss"]):
        raise CheckFailed(f"non-finite loss on the GPU: train {last['train_loss']}, val {last['val_loss']} "
                          f"(train.amp {ctx.amp})")
    return (f"{epochs}/{epochs} epochs in {time.monotonic() - started:.0f} s, FeatureClassifier "
            f"({status['model_parameters'] / 1e6:.2f} M params, no backbone) on {trained}; "
            f"{last['clips_per_s']:.0f} clips/s, CUDA peak {last['peak_memory_mb']:.0f} MiB, val_acc {last['val_acc']:.3f}")


def check_evaluate_features(ctx: Context) -> str:
    """Evaluate on the cached views on CUDA (head only); agrees with the full model on the source videos."""
    import numpy as np

    from madapter import metrics
    from madapter.data.index.schema import eval_split
    from madapter.evaluate import evaluate, score_frames
    from madapter.paths import StagePaths

    params = features_params(ctx)
    checkpoint = ctx.repo / FEATURES_OUT / "train" / "checkpoint.pt"
    run = json.loads((ctx.repo / FEATURES_OUT / "train" / "run.json").read_text())
    result, peak = cuda_peak_of(lambda: evaluate(params))
    if result.get("source") != "features":
        raise CheckFailed(f"evaluate scored {result.get('source')!r}, expected the cached features")
    recorded = expect_recorded(f"{ctx.repo / FEATURES_OUT / 'evaluate' / 'metrics.json'}", result, None)
    on_gpu = require_on_gpu("evaluate on features", peak, checkpoint, "features")
    paths = StagePaths.from_params(params)
    split = eval_split(paths.index, params.evaluate.split)
    cached = cached_scores(params, paths, checkpoint, split)
    online = score_frames(params, paths, checkpoint, split)
    online_scores = metrics.average_views(online.logits)
    if not np.array_equal(cached[1], online.labels):
        raise CheckFailed("the cached and the source-video evaluation scored different videos (labels differ)")
    agree = float(np.mean(cached[0].argmax(1) == online_scores.argmax(1)))
    gap = float(np.abs(softmax(cached[0]) - softmax(online_scores)).max())
    if agree < MIN_TOP1_AGREEMENT or gap > MAX_SCORE_GAP:
        raise CheckFailed(f"on the GPU, cached-feature evaluation disagrees with the full model on the source videos: "
                          f"same top-1 for {agree:.0%} of videos (>= {MIN_TOP1_AGREEMENT:.0%} expected), largest "
                          f"probability gap {gap:.3f} (<= {MAX_SCORE_GAP})")
    return (f"top1 {result['top1']:.3f} on {result['num_videos']} videos ({recorded}, run {run['run_id'][:8]}); "
            f"{on_gpu}; agrees with the full model on the source videos "
            f"(same top-1 {agree:.0%}, max probability gap {gap:.4f})")


def cached_scores(params: Any, paths: Any, checkpoint: Path, split: str) -> tuple[Any, Any]:
    """Per-video averaged logits and labels of ``split``'s cached views (``score_features``) on ``evaluate.device``."""
    from madapter import metrics
    from madapter.evaluate import score_features

    scored = score_features(params, paths, checkpoint, split)
    if scored.device.type != "cuda":
        raise CheckFailed(f"score_features ran the head on {scored.device}, expected cuda (evaluate.device: cuda)")
    return metrics.average_views(scored.logits), scored.labels
