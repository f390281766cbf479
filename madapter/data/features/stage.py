"""Features stage: the frozen backbone's outputs for every stored view, computed ONCE (Ray Data).

It reads the frame store (:mod:`madapter.data.store.frame_store`) for the training views and, for the
evaluation views, the videos ``evaluate`` scores, from the one function both use
(:func:`madapter.data.evaluated.evaluated_videos`: those the frame store kept, in index order, read
from the source files), and writes ``data/features/<ds>`` through
:mod:`madapter.data.features.feature_store`.  It never imports another stage module.

How: the driver lists every video of every split (:func:`plan_videos`) and cuts them into work
items of about ``features.batch_size`` clips; Ray Data runs them through ``features.actors``
actors of :class:`madapter.data.features.extractor.BackboneExtractor` (each builds the backbone
once, optionally on a GPU), and the driver consumes the results IN ORDER (``preserve_order``)
and writes the shards.  So the bytes are a function of the inputs: the same frame store, videos,
backbone and params give the same files whatever ``features.actors`` and ``features.batch_size``
are (:data:`RUN_CONTROL_KEYS`; tested).  The duration goes to ``outputs/timings/features.json``,
never into the output.  The output is built in ``<features>.partial`` and swapped in at the end:
a failed run leaves the previous features intact.

With ``train.source: frames`` nothing reads features, so the stage only writes ``features.json``
with ``"enabled": false`` (DVC needs its output) and returns at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from madapter.config import ConfigError, Params
from madapter.data.evaluated import evaluated_videos
from madapter.data.features.extractor import (
    DEVICE_COLUMN,
    PRECISION_COLUMN,
    TRAIN,
    BackboneExtractor,
    Plan,
    VideoJob,
    build_frozen_model,
    no_cuda_line,
)
from madapter.data.features.feature_store import (
    FEATURES_META,
    FeatureWriter,
    LevelSpec,
    SplitSummary,
    cache_key,
    computed_on_record,
    level_name,
    write_features_meta,
)
from madapter.data.index.schema import SPLITS
from madapter.data.store.frame_store import (
    STORE_META,
    FrameStore,
    has_split,
    read_store_meta,
    store_digest,
    stored_split,
)
from madapter.data.timing import write_timing
from madapter.errors import StageError
from madapter.paths import StagePaths

logger = logging.getLogger(__name__)

RAY_DATA_PROGRESS_LOGGER = "ray.data._internal.progress"
"""Ray Data's logger (2.60) of "Progress bars disabled. To enable, set ..." (we disable them on purpose)."""

RUN_CONTROL_KEYS = frozenset({"batch_size", "actors", "object_store_mb"})
"""``features`` keys that change how fast the stage runs, never what it writes (not DVC params).
``use_gpu`` is not one: on a GPU (and with ``model.half_precision``) the backbone computes other values."""


@dataclass(frozen=True)
class ModelSpec:
    """What the driver learns from one dry run of the backbone: identity, input config, output shapes."""

    backbone: dict[str, Any]
    data_config: dict[str, list]
    levels: list[LevelSpec]
    pooled_dim: int


def plan_videos(params: Params, paths: StagePaths) -> Plan:
    """Every video to extract, per split: ``train`` in frame-store order (``ClipDataset`` item ``i``),
    ``val``/``test`` as ``evaluate`` selects them (:func:`~madapter.data.evaluated.evaluated_videos`)."""
    frames = paths.frames.resolve()
    clips = params.evaluate.clips * params.evaluate.crops
    jobs: dict[str, list[VideoJob]] = {}
    for split in SPLITS:
        if not has_split(frames, split) or stored_split(frames, split) != split:
            jobs[split] = []  # absent, or stored once as another split (linked: link_repeated_splits)
        elif split == TRAIN:
            store = FrameStore(frames, split)
            jobs[split] = [VideoJob(p, int(y), name)
                           for p, y, name in zip(store.paths, store.labels, store.label_names, strict=True)]
        else:
            jobs[split] = [VideoJob(v.path, v.label, v.label_name, v.source, v.start, v.end)
                           for v in evaluated_videos(paths, split)]
    views = {split: (params.features.train_views if split == TRAIN else clips) for split in SPLITS}
    return Plan(str(frames), jobs, views)


def work_items(plan: Plan, batch_size: int) -> list[dict[str, Any]]:
    """Runs of consecutive videos of one split, about ``batch_size`` clips each (at least one video)."""
    items = []
    for split, jobs in plan.jobs.items():
        per_item = max(1, batch_size // plan.views[split])
        items += [{"split": split, "first": first, "count": min(per_item, len(jobs) - first)}
                  for first in range(0, len(jobs), per_item)]
    return items


def describe_model(params: Params, num_classes: int) -> ModelSpec:
    """Build the model once on the driver and run one clip of zeros: backbone identity and output shapes."""
    import torch

    from madapter.models.checkpoint import describe_backbone

    model = build_frozen_model(params, num_classes)
    dc = model.data_config
    size = int(dc["input_size"][-1])
    out = model.extract(torch.zeros(1, params.model.num_frames, 3, size, size))  # grids pooled by the model
    levels = [LevelSpec(block, int(g.shape[-1]), (int(g.shape[2]), int(g.shape[3])))
              for block, g in zip(model.backbone.level_indices, out.levels, strict=True)] if model.uses_levels else []
    data_config = {"mean": [float(v) for v in dc["mean"]], "std": [float(v) for v in dc["std"]],
                   "input_size": [int(v) for v in dc["input_size"]]}
    return ModelSpec(describe_backbone(model), data_config, levels, int(out.pooled.shape[-1]))


def _actor_cpus(actors: int) -> int:
    """CPUs (= torch threads) per actor: the cluster's CPUs shared out, at most one node's worth."""
    import ray

    total = ray.cluster_resources().get("CPU", 1)
    largest = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=total)
    return max(1, int(min(total / actors, largest)))


def _check_cuda(params: Params) -> None:
    """``features.use_gpu`` where this process's torch cannot use CUDA: refused before any work, in one line
    (naming a GPU torch cannot use, if any), as training refuses ``train.use_gpu``.

    Only for a local Ray, whose actors run on this machine.  Ray cannot be asked: it counts GPUs
    through NVML, which also works on a driver too old for torch.  On a ``RAY_ADDRESS`` cluster the
    driver may well have no GPU; there :func:`_check_gpus` and each actor's own refusal decide.
    """
    import torch

    if params.features.use_gpu and not os.environ.get("RAY_ADDRESS") and not torch.cuda.is_available():
        raise StageError(no_cuda_line("on this machine"))


def _check_gpus(params: Params) -> None:
    """``features.use_gpu`` on a cluster without enough GPUs would wait forever: refuse (local) or warn (cluster)."""
    import ray

    cfg = params.features
    have = ray.cluster_resources().get("GPU", 0)
    if not cfg.use_gpu or have >= cfg.actors:
        return
    message = (f"features: {cfg.actors} GPU actor(s) need {cfg.actors} GPU but the Ray cluster has {have:g}; "
               f"set features.use_gpu: false or lower features.actors")
    if os.environ.get("RAY_ADDRESS"):
        logger.warning("%s (waiting: the cluster may scale up)", message)
        return
    raise StageError(message)


def _rows(params: Params, plan: Plan, num_classes: int) -> Iterator[dict[str, np.ndarray]]:
    """The extracted views as Ray Data batches, in plan order (one actor pool, ``features.actors`` actors)."""
    import ray
    import ray.data

    from madapter.ray_runtime import start_ray

    cfg = params.features
    start_ray(params, cpus_needed=cfg.actors, object_store_mb=cfg.object_store_mb)
    _check_gpus(params)
    threads = _actor_cpus(cfg.actors)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # the driver writes in plan order: deterministic bytes
    ctx.enable_progress_bars = False  # the driver's tqdm counts views
    # ... so Ray Data's warning that its bars are off (once per process) says nothing to the user
    logging.getLogger(RAY_DATA_PROGRESS_LOGGER).setLevel(logging.ERROR)
    dataset = ray.data.from_items(work_items(plan, cfg.batch_size)).map_batches(
        BackboneExtractor,
        batch_size=1,  # one work item per call: the driver, not Ray's block layout, decides what runs together
        compute=ray.data.ActorPoolStrategy(size=cfg.actors),
        num_cpus=threads,
        num_gpus=1 if cfg.use_gpu else 0,
        fn_constructor_kwargs={"params": params.model_dump(mode="json"), "plan": plan, "num_classes": num_classes,
                               "threads": threads},
    )
    logger.info("features: %d actor(s) x %d CPU%s, %d views", cfg.actors, threads, " + 1 GPU" if cfg.use_gpu else "",
                plan.total_views)
    yield from dataset.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1)


def _write_all(params: Params, plan: Plan, spec: ModelSpec, building: Path, num_classes: int,
               computed: set[tuple[str, str]]) -> dict[str, SplitSummary]:
    """Consume the extracted rows in order and write every split (empty splits get a header-only manifest);
    ``computed`` collects the (device, precision) every row reports it was computed in (``computed_on``)."""
    from tqdm import tqdm

    cfg, num_frames = params.features, params.model.num_frames
    writers = {split: FeatureWriter(building / split, spec.levels, num_frames, spec.pooled_dim, cfg.dtype,
                                    plan.views[split], len(plan.jobs[split]), cfg.shard_size) for split in SPLITS}
    expected = ((s, i, v) for s in SPLITS for i in range(len(plan.jobs[s])) for v in range(plan.views[s]))
    pending: list[dict[str, np.ndarray]] = []
    arrays = [level_name(k) for k in range(len(spec.levels))]
    # closing(): on an error (a bad shard, Ctrl-C) the Ray Data stream is shut down at once, its actors
    # with it; left to the garbage collector (a traceback keeps it alive), they hold their CPUs.
    rows = contextlib.closing(_rows(params, plan, num_classes) if plan.total_views else (row for row in ()))
    with tqdm(total=plan.total_views, desc="features", unit="view", leave=False, disable=None) as bar, rows as stream:
        for batch in stream:
            computed.update(zip(batch[DEVICE_COLUMN].tolist(), batch[PRECISION_COLUMN].tolist(), strict=True))
            for r in range(len(batch["view"])):
                key = (str(batch["split"][r]), int(batch["video"][r]), int(batch["view"][r]))
                if key != next(expected, None):
                    raise RuntimeError(f"features: rows out of order at {key}")  # a bug, not a user error
                pending.append({a: batch[a][r] for a in [*arrays, "pooled"]})
                split, index, view = key
                if view == plan.views[split] - 1:
                    job = plan.jobs[split][index]
                    writers[split].add(job.path, job.label, job.label_name,
                                       [np.stack([p[a] for p in pending]) for a in arrays],
                                       np.stack([p["pooled"] for p in pending]))
                    pending.clear()
                bar.update(1)
    if len(computed) > 1:
        logger.warning("features: the actors disagree on where/in what precision they ran the backbone: %s "
                       "(features.json computed_on records it)", sorted(computed))
    return {split: writer.close() for split, writer in writers.items()}


def _meta(params: Params, paths: StagePaths, plan: Plan, spec: ModelSpec, classes: list[str],
          splits: dict[str, SplitSummary], computed: set[tuple[str, str]]) -> dict[str, Any]:
    """``features.json``: everything a reader needs and everything that decided the values, and where
    the actors really computed them (``computed_on``: what they reported, not what was asked); no timings."""
    from madapter.data.clips import ViewProtocol

    cfg = params.features
    return {
        "enabled": True,
        "dataset": params.dataset.name,
        "backbone": spec.backbone,
        "model_cfg": params.model.model_dump(mode="json"),
        "data_config": spec.data_config,
        "classes": classes,
        "num_frames": params.model.num_frames,
        "levels": [level.to_json() for level in spec.levels],
        "pooled_dim": spec.pooled_dim,
        "dtype": cfg.dtype,
        "level_pool": spec.backbone["level_pool"],
        "pooling": _pooling_text(spec.backbone["level_pool"]),
        "views": {"train": f"ClipDataset(train=True, seed=base.seed) at epochs 0..{cfg.train_views - 1} "
                           "(temporal jitter + random crop over the frame store)",
                  "eval": "load_video_views of the SOURCE video: evaluate.clips x evaluate.crops, clip-major"},
        "protocol": ViewProtocol.from_params(params, spec.data_config).to_dict(),
        "splits": {split: {"videos": s.videos, "views": plan.views[split], "views_total": s.views,
                           "shards": s.shards, "bytes": s.bytes} for split, s in splits.items()},
        "bytes": sum(s.bytes for s in splits.values()),
        "cache_key": cache_key(params, spec.backbone, store_digest(paths.frames)),
        "computed_on": computed_on_record(computed),
    }


def _pooling_text(level_pool: int | None) -> str:
    """``features.json``'s human-readable ``pooling``: the stored grids are what the model's ``extract`` gives."""
    if level_pool is None:
        return "none: full token grids (model.level_pool: null)"
    return (f"model.level_pool: {level_pool}: the model average-pools (adaptive) each level's token grid to at "
            f"most {level_pool}x{level_pool} before its branch, and these are its outputs; levels[].grid is the "
            "stored grid")


def link_repeated_splits(frames: Path, building: Path, splits: dict[str, SplitSummary]) -> dict[str, SplitSummary]:
    """A split the frame store keeps once as another (``same_as``: the index's withheld-test copy of
    val) gets that split's feature files, hard-linked where the file system allows: the same videos
    and views, extracted once instead of twice.  Returns the summaries of the linked splits."""
    linked: dict[str, SplitSummary] = {}
    for split in SPLITS:
        same = stored_split(frames, split)
        if same == split:
            continue
        shutil.rmtree(building / split, ignore_errors=True)
        shutil.copytree(building / same, building / split, copy_function=_link_or_copy)
        linked[split] = splits[same]
        logger.info("features %s: the frame store's %s videos; linked %s/'s features, not extracted again",
                    split, same, same)
    return linked


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _swap_in(building: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    os.replace(building, target)


def _fresh_building(target: Path) -> Path:
    building = target.with_name(target.name + ".partial")
    shutil.rmtree(building, ignore_errors=True)
    building.mkdir(parents=True)
    return building


def _write_disabled(params: Params, paths: StagePaths, started: float) -> Path:
    """``train.source: frames``: nothing reads features; record that, so DVC has its output."""
    target = paths.features
    building = _fresh_building(target)
    write_features_meta(building, {"enabled": False, "dataset": params.dataset.name,
                                   "reason": f"train.source: {params.train.source}"})
    _swap_in(building, target)
    logger.info("features: skipped (train.source: %s trains from the frame store); wrote %s",
                params.train.source, target / FEATURES_META)
    write_timing(paths, "features", started, 0, 0)
    return target


def extract_features(params: Params) -> Path:
    """Build ``StagePaths.features`` from the frame store, the index and the source videos; returns it."""
    started = time.perf_counter()
    paths = StagePaths.from_params(params)
    if params.train.source != "features":
        return _write_disabled(params, paths, started)
    _check_cuda(params)
    frames = paths.frames.resolve()
    if not (frames / STORE_META).is_file():
        raise ConfigError(f"{frames}: no frame store found; run the decode stage first (python -m madapter decode)")
    classes = list(read_store_meta(frames)["classes"])
    plan = plan_videos(params, paths)
    spec = describe_model(params, len(classes))
    target = paths.features
    building = _fresh_building(target)
    try:
        computed: set[tuple[str, str]] = set()
        splits = _write_all(params, plan, spec, building, len(classes), computed)
        splits.update(link_repeated_splits(frames, building, splits))
        write_features_meta(building, _meta(params, paths, plan, spec, classes, splits, computed))
    except BaseException:
        shutil.rmtree(building, ignore_errors=True)  # the previous features, if any, stay untouched
        raise
    _swap_in(building, target)
    videos = sum(s.videos for s in splits.values())
    total_bytes = sum(s.bytes for s in splits.values())
    logger.info("features: %d videos, %d views, %.1f MB -> %s", videos, plan.total_views, total_bytes / 1e6, target)
    write_timing(paths, "features", started, videos, params.features.actors,
                 frames=plan.total_views * params.model.num_frames)
    return target
