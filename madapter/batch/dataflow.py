"""``batch-predict``: many videos -> one predictions table, on Ray Data.

The Ray Data graph::

    from_items(idx, source, start, end)        the inputs, in blocks spread over the cluster
      -> map_batches(decode_views)             CPU tasks: decord/PyAV -> the protocol's views
      -> map_batches(Classifier, ActorPool)    actors (1 GPU each when there are GPUs): top-k
      -> driver: rows sorted back into input order -> Parquet / CSV (atomic)

Everything that can be wrong with the arguments (inputs, output, model, GPUs) is checked on the
driver first, so a bad argument costs no cluster time and ends in one line and exit code 2.
A video that cannot be read is one row with an ``error`` and empty predictions.
Order: Ray Data runs blocks out of order (no ``preserve_order``: one slow video must not stall
the others); every row carries its input index and the driver sorts by it.
Ray is started with :func:`madapter.ray_runtime.start_ray`: ``$RAY_ADDRESS`` when set, else a
small local Ray.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from madapter.batch.inputs import VideoInput, gather_inputs
from madapter.batch.model import ModelBundle, resolve_model
from madapter.batch.output import check_output, write_table
from madapter.batch.workers import Classifier, decode_views, label_columns
from madapter.config import ConfigError, Params

logger = logging.getLogger(__name__)

DECODE_BATCH = 2
"""Videos per call of a decoding task: small, so decoded views stream to the actors early."""
MIN_DECODE_MEMORY = 512 * 2**20
ROWS_PER_BLOCK = 100
"""Input rows per block on a big job (each block is one decoding task's share)."""
ERRORS_LOGGED = 20
"""Bad videos named one per line in the log; the rest are only counted (they are all in the table)."""


@dataclass(frozen=True)
class BatchRequest:
    """What to score, with which model, where to write, and how much of the cluster to use."""

    output: Path
    model: str
    split: str | None = None
    folder: Path | None = None
    list_file: Path | None = None
    top_k: int | None = None
    """Classes per video (default ``register.top_k``)."""
    batch_size: int | None = None
    """Videos per forward pass in an actor (default ``evaluate.batch_size``)."""
    actors: int = 1
    use_gpu: bool | None = None
    """``None``: GPU actors when the Ray cluster has GPUs."""
    actor_cpus: int | None = None
    """CPUs (torch threads) per CPU actor (default: half the cluster's CPUs shared by the actors)."""


@dataclass(frozen=True)
class BatchResult:
    """What a run did: for the summary line, the CLI and tests."""

    output: Path
    videos: int
    errors: int
    seconds: float
    views: int
    """Clips scored: ``clips x crops`` per readable video, each ``num_frames`` frames through the model."""
    model: str
    gpu: bool

    @property
    def clips_per_second(self) -> float:
        return self.views / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        rate = self.videos / self.seconds if self.seconds > 0 else 0.0
        return (f"batch-predict: {self.videos} videos ({self.errors} errors) in {self.seconds:.1f}s: "
                f"{rate:.2f} videos/s, {self.clips_per_second:.2f} clips/s on {'GPU' if self.gpu else 'CPU'} "
                f"-> {self.output}")


def _check_request(request: BatchRequest, params: Params) -> tuple[int, int]:
    """``top_k`` and ``batch_size`` with their defaults, each at least 1 (ConfigError naming the option)."""
    top_k = request.top_k if request.top_k is not None else params.register.top_k
    batch_size = request.batch_size if request.batch_size is not None else params.evaluate.batch_size
    for option, value in (("--top-k", top_k), ("--batch-size", batch_size), ("--actors", request.actors)):
        if value < 1:
            raise ConfigError(f"{option} {value}: must be at least 1")
    if request.actor_cpus is not None and request.actor_cpus < 1:
        raise ConfigError(f"--actor-cpus {request.actor_cpus}: must be at least 1")
    return top_k, batch_size


def _cluster() -> tuple[float, float, float]:
    """Total CPUs, total GPUs and the CPUs of the largest alive node of the Ray cluster."""
    import ray

    resources = ray.cluster_resources()
    total = resources.get("CPU", 1)
    largest = max((n["Resources"].get("CPU", 0) for n in ray.nodes() if n.get("Alive")), default=total)
    return total, resources.get("GPU", 0), largest


def _plan_actors(request: BatchRequest) -> tuple[bool, int, int]:
    """``(gpu, actors, cpus per actor)`` for this cluster; refuses a plan that could never run.

    The actors must leave at least one CPU for the decoding tasks, or the pool would wait forever
    for views nobody decodes.  On a cluster (``$RAY_ADDRESS``) that may scale up, a shortfall is
    only a warning.
    """
    total, gpus, largest = _cluster()
    on_cluster = bool(os.environ.get("RAY_ADDRESS"))
    actors = request.actors
    gpu = gpus >= 1 if request.use_gpu is None else request.use_gpu
    if gpu and request.use_gpu is None and gpus < actors:
        actors = int(gpus)  # auto mode: as many GPU actors as there are GPUs
        logger.info("batch-predict: %d GPU(s): %d GPU actor(s)", actors, actors)
    problems = []
    if gpu and gpus < actors:
        problems.append(f"--use-gpu: {actors} GPU actor(s) need {actors} GPU(s) but the Ray cluster has {gpus:g}; "
                        "drop --use-gpu or lower --actors")
    cpus = 1 if gpu else (request.actor_cpus or max(1, int(min(largest, total / (2 * actors)))))
    if cpus > largest:
        problems.append(f"--actor-cpus {cpus}: no node of the Ray cluster has more than {largest:g} CPUs; "
                        "lower --actor-cpus")
    elif actors * cpus + 1 > total:
        problems.append(f"--actors {actors} x {cpus} CPU(s) leave no CPU for decoding on a Ray cluster of "
                        f"{total:g} CPUs; lower --actors or --actor-cpus")
    for problem in problems:
        if not on_cluster:
            raise ConfigError(problem)
        logger.warning("%s (waiting: the cluster may scale up)", problem)
    return gpu, actors, cpus


def decode_memory(protocol) -> int:
    """Bytes of RAM a decoding task asks Ray for: its batch's views, with room for the decoded frames.

    Why ask at all: a node with many CPUs and little RAM would otherwise run a decoding task per
    core and run out of memory on a big protocol (8x3x3 at 224 px is 43 MB of views per video).
    The request also keeps decoding a separate operator: Ray Data fuses a task stage into the
    following actor stage when their resource requests are equal, which would move all decoding
    into the (few) model actors instead of spreading it over every CPU.
    """
    views = protocol.clips * protocol.crops * protocol.num_frames * 3 * protocol.crop_size ** 2 * 4
    return max(MIN_DECODE_MEMORY, 4 * DECODE_BATCH * views)


def _items(inputs: list[VideoInput]) -> list[dict]:
    """The rows Ray sees: only what decoding needs (the source as bytes: any file name survives Arrow)."""
    nan = float("nan")
    return [{"idx": i, "source": os.fsencode(v.source), "start": nan if v.start is None else v.start,
             "end": nan if v.end is None else v.end} for i, v in enumerate(inputs)]


def _dataset(inputs: list[VideoInput], bundle: ModelBundle, params: Params, top_k: int, batch_size: int,
             gpu: bool, actors: int, cpus: int):
    """The lazy Ray Data graph: inputs -> decoding tasks -> classifying actor pool."""
    import ray
    import ray.data

    total, _, _ = _cluster()
    blocks = min(len(inputs), max(2 * int(total), math.ceil(len(inputs) / ROWS_PER_BLOCK)))
    shared = ray.put((bundle.checkpoint, bundle.protocol.to_dict()))
    ds = ray.data.from_items(_items(inputs), override_num_blocks=blocks)
    ds.context.enable_progress_bars = False  # the driver's tqdm counts videos (this dataset's context only)
    return ds.map_batches(
        decode_views,
        batch_size=DECODE_BATCH,
        batch_format="numpy",
        num_cpus=1,
        memory=decode_memory(bundle.protocol),
        fn_kwargs={"protocol": bundle.protocol.to_dict(), "backend": params.decode.backend},
    ).map_batches(
        Classifier,
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=cpus,
        num_gpus=1 if gpu else 0,
        fn_constructor_kwargs={"bundle": [shared], "top_k": top_k, "use_gpu": gpu, "threads": cpus},
    )


def _collect(ds, total: int):
    """All result rows, back in input order (a missing or duplicated row is a bug, not a user error)."""
    import pandas as pd
    from tqdm import tqdm

    parts = []
    errors = 0
    with tqdm(total=total, desc="batch-predict", unit="video", disable=None) as bar:  # no bar lines on a pipe
        for part in ds.iter_batches(batch_size=None, batch_format="pandas", prefetch_batches=1):
            parts.append(part)
            errors += int((part["error"] != "").sum())
            bar.update(len(part))
            bar.set_postfix(errors=errors)
    frame = pd.concat(parts, ignore_index=True).sort_values("idx", kind="stable").reset_index(drop=True)
    if not np.array_equal(frame["idx"].to_numpy(), np.arange(total)):
        raise RuntimeError(f"batch-predict: expected rows 0..{total - 1}, got {len(frame)} rows")
    return frame


def _table(frame, inputs: list[VideoInput], k: int, with_labels: bool):
    """The output columns (:mod:`madapter.batch.output`): missing predictions as nulls, not NaN."""
    import pandas as pd

    table = pd.DataFrame({"path": pd.Series([v.path for v in inputs], dtype="string")})
    if with_labels:
        table["true_label"] = pd.Series([v.true_label for v in inputs], dtype="string")
    for name in label_columns(k):
        table[name] = frame[name].astype("string" if name.startswith("label_") else "Float64").to_numpy()
    table["error"] = frame["error"].fillna("").astype("string").to_numpy()
    return table


def _log_errors(table) -> None:
    bad = table[table["error"] != ""]
    for path, error in list(zip(bad["path"], bad["error"], strict=True))[:ERRORS_LOGGED]:
        logger.warning("%s: %s", path, error)
    if len(bad) > ERRORS_LOGGED:
        logger.warning("... and %d more unreadable videos (see the error column)", len(bad) - ERRORS_LOGGED)


def batch_predict(params: Params, request: BatchRequest) -> BatchResult:
    """Score every input video; write one row per input, in input order, to ``request.output``."""
    from madapter.ray_runtime import start_ray

    top_k, batch_size = _check_request(request, params)
    check_output(request.output)
    inputs = gather_inputs(params, request.split, request.folder, request.list_file)
    bundle = resolve_model(request.model, params)
    k = min(top_k, len(bundle.classes))
    start_ray(params, cpus_needed=request.actors + 1)
    gpu, actors, cpus = _plan_actors(request)
    logger.info("batch-predict: %d videos, %d %s actor(s) x %d CPU, batches of %d videos, protocol %s",
                len(inputs), actors, "GPU" if gpu else "CPU", cpus, batch_size, bundle.protocol.name)
    started = time.perf_counter()
    frame = _collect(_dataset(inputs, bundle, params, k, batch_size, gpu, actors, cpus), len(inputs))
    table = _table(frame, inputs, k, with_labels=request.split is not None)
    write_table(table, request.output)
    seconds = time.perf_counter() - started
    errors = int((table["error"] != "").sum())
    _log_errors(table)
    views = (len(inputs) - errors) * bundle.protocol.clips * bundle.protocol.crops
    result = BatchResult(request.output, len(inputs), errors, seconds, views, bundle.description, gpu)
    logger.info("%s", result.summary())
    return result
