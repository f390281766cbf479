"""Training stage: a Ray Train driver (:func:`train`) and the loop every worker runs.

The split follows Made-With-ML: :func:`train` resolves configuration, MLflow and Ray, then
hands a plain ``config`` dict to :func:`train_loop_per_worker`, which is ordinary PyTorch
(plus ``ray.train.report``).  Design points:

* Only the trainable part is data-parallel.  With a frozen backbone (``madapter``/``linear``)
  ``model.adapter`` alone is wrapped in DDP, so gradient all-reduce never touches the backbone.
* Every epoch rank 0 writes a checkpoint (trainable weights, optimiser + scheduler state, epoch,
  history and the MLflow run id) to Ray storage ``<train.storage_path>/<ray_run_name(params)>``.
  Ray Train V2 restores the latest one both after a worker failure (``FailureConfig``) and when
  the same run is started again, and the MLflow run id inside it makes the resumed run log into
  the same MLflow run.  The Ray run name carries a fingerprint of everything that shapes the
  weights, so changing a hyper-parameter (``dvc exp run -S train.lr=...``) starts a fresh run
  instead of silently resuming the finished old one.
* Ray Train V2 rejects ``MLflowLoggerCallback``, so rank 0 logs to MLflow itself.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import resource
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from madapter.config import ConfigError, Params
from madapter.distributed import all_reduce_max, all_reduce_sum, gather_objects
from madapter.errors import StageError, first_line
from madapter.models.precision import amp_autocast, grad_scaler
from madapter.models.precision import describe as describe_precision
from madapter.paths import StagePaths

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "epoch-"
TRAIN_STATE_FILE = "train_state.pt"
MODEL_FILE = "model.pt"
META_FILE = "meta.json"
WORKER_STATUS_DIR = "workers"


@dataclass
class TrainResult:
    """What the train stage produced (also written as ``outputs/train/run.json``)."""

    checkpoint: Path
    run_id: str
    run_name: str
    experiment: str
    tracking_uri: str
    epochs_done: int
    epochs: int
    completed: bool
    ray_checkpoint: str
    history: list[dict] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["checkpoint"] = str(self.checkpoint)
        return data


# ----------------------------------------------------------------------------- small helpers
RUN_CONTROL_KEYS = frozenset(
    {"run_name", "storage_path", "max_epochs_per_run", "max_failures", "checkpoints_to_keep", "object_store_mb",
     "loader_workers", "cpus_per_worker"}
)
"""``train`` keys that say how/where a run executes, not what it learns: changing them resumes."""


def training_fingerprint(params: Params, frames_dir: Path) -> str:
    """Short hash of what determines the trained weights: data identity, model, training recipe, seed."""
    store = frames_dir / "store.json"
    data_id = hashlib.sha256(store.read_bytes()).hexdigest() if store.is_file() else ""
    recipe = {
        "seed": params.base.seed,
        "dataset": params.dataset.name,
        "data": data_id,
        "decode": params.decode.model_dump(mode="json", exclude={"workers"}),  # how many processes decode changes nothing
        "model": params.model.model_dump(mode="json"),
        "train": {k: v for k, v in params.train.model_dump(mode="json").items() if k not in RUN_CONTROL_KEYS},
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:10]


def ray_run_name(params: Params) -> str:
    """``<train.run_name>-<fingerprint>``: the Ray run (checkpoint directory) these params resume."""
    frames = StagePaths.from_params(params).frames
    return f"{params.train.run_name}-{training_fingerprint(params, frames)}"


def lr_lambda(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up then cosine decay to 0, as a multiplier of the base learning rate."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def peak_memory_mb(device: torch.device) -> float:
    """High-water mark of this worker: CUDA allocator peak on GPU, process max RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases and norms (1-D tensors) nor on what the model names
    in ``no_weight_decay()`` (position embeddings, tokens: timm's convention)."""
    exempt = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name in exempt else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def latest_checkpoint_dir(run_dir: Path) -> Path | None:
    """The newest complete epoch checkpoint in a Ray run directory (what Ray V2 will restore)."""
    candidates = sorted(d for d in run_dir.glob(f"{CHECKPOINT_PREFIX}*") if (d / META_FILE).is_file())
    return candidates[-1] if candidates else None


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def _val_split(frames: Path) -> str:
    """``val`` when the dataset has a non-empty val split, else ``test`` (logged by the caller)."""
    from madapter.data.store.format import FrameStore

    try:
        if len(FrameStore(frames, "val")) > 0:
            return "val"
    except (FileNotFoundError, ValueError):
        pass
    return "test"


# ----------------------------------------------------------------------------- worker side
class _WorkerStatus:
    """``<run dir>/workers/rank-<r>.json``: pid, epoch and step of each worker, updated per step.

    Operators use it to see which process is which rank and how far it got; the fault-tolerance
    test uses it to pick a worker to kill mid-epoch.
    """

    def __init__(self, run_dir: Path, rank: int):
        self.path = run_dir / WORKER_STATUS_DIR / f"rank-{rank}.json"
        self.base = {"rank": rank, "pid": os.getpid(), "host": os.uname().nodename}

    def update(self, **fields: Any) -> None:
        write_json_atomic(self.path, {**self.base, **fields, "time": time.time()})


@torch.no_grad()
def _validate(forward, dataset, rank: int, world_size: int, batch_size: int, device, num_classes: int, amp) -> dict:
    """Single-view validation, sharded over workers (rank r takes items r, r+W, ...), gathered exactly."""
    from madapter.metrics import classification_report

    indices = list(range(rank, len(dataset), world_size))
    logits_parts, label_parts = [], []
    loss_sum = 0.0
    for start in range(0, len(indices), batch_size):
        items = [dataset[i] for i in indices[start : start + batch_size]]
        x = torch.stack([item[0] for item in items]).to(device)
        y = torch.tensor([item[1] for item in items], device=device)
        with amp_autocast(amp, device):
            logits = forward(x).float()
        loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
        logits_parts.append(logits.cpu().numpy())
        label_parts.append(y.cpu().numpy())
    local = (
        np.concatenate(logits_parts) if logits_parts else np.zeros((0, num_classes), np.float32),
        np.concatenate(label_parts) if label_parts else np.zeros((0,), np.int64),
        loss_sum,
    )
    parts = gather_objects(local, world_size, device)
    logits = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    report = classification_report(logits, labels, num_classes)
    report["loss"] = sum(p[2] for p in parts) / max(1, len(labels))
    return report


def _log_final_artifacts(client, run_id: str, params: Params, classes: list[str], val_report: dict, history) -> None:
    """Confusion matrix PNG, per-class accuracy CSV, label map, resolved config, curves (rank 0)."""
    from madapter import metrics
    from madapter.tracking import log_dict_artifact

    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        matrix = val_report["confusion"]
        files = [
            metrics.plot_confusion(matrix, classes, tmp_dir / "confusion_matrix.png", "validation (1x1)"),
            metrics.write_per_class_csv(matrix, classes, tmp_dir / "per_class_accuracy.csv"),
            metrics.write_confusion_csv(matrix, classes, tmp_dir / "confusion.csv"),
            metrics.plot_curves(history, tmp_dir / "curves.png"),
        ]
        for path in files:
            client.log_artifact(run_id, str(path), "train")
    log_dict_artifact(client, run_id, {str(i): name for i, name in enumerate(classes)}, "label_map.json")
    log_dict_artifact(client, run_id, params.model_dump(mode="json"), "config/params.yaml")


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker: data shard, model (DDP on the trainable part), epochs, checkpoints.

    ``config`` holds only plain values: ``params`` (the validated params as JSON-able dict) and
    absolute paths/URIs resolved by the driver, so the worker never depends on its cwd.
    """
    import ray.train
    import ray.train.torch
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler
    from tqdm import tqdm

    from madapter.data.clips import ClipDataset
    from madapter.data.store.format import FrameStore
    from madapter.models.build import build_model, count_parameters
    from madapter.models.checkpoint import save_checkpoint

    params = Params.model_validate(config["params"])
    cfg = params.train
    torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    context = ray.train.get_context()
    rank, world_size = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)  # collectives and new CUDA tensors default to the current device
    frames, run_dir = Path(config["frames_dir"]), Path(config["run_dir"])
    status = _WorkerStatus(run_dir, rank)
    status.update(epoch=None, step=0, state="starting")

    store = FrameStore(frames, "train")
    classes = list(store.classes)
    torch.manual_seed(params.base.seed)  # identical init on every rank (DDP also broadcasts rank 0's)
    model = build_model(params.model, len(classes))
    data_cfg = model.data_config
    crop = int(data_cfg["input_size"][-1])
    clip_kw = dict(num_frames=params.model.num_frames, mean=data_cfg["mean"], std=data_cfg["std"], crop_size=crop)
    train_ds = ClipDataset(store, train=True, seed=params.base.seed, **clip_kw)
    val_ds = ClipDataset(FrameStore(frames, config["val_split"]), train=False, seed=params.base.seed, **clip_kw)

    # Restore before wrapping: DDP broadcasts rank 0's parameters when it wraps the module.
    start_epoch, history, run_id, state = 0, [], config["run_id"], None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as ckpt_dir:
            state = torch.load(Path(ckpt_dir) / TRAIN_STATE_FILE, map_location="cpu", weights_only=False)
        model.load_trainable_state_dict(state["model"])
        start_epoch, history, run_id = state["epoch"], state["history"], state["run_id"]
        if rank == 0:
            logger.info("resuming run %s after epoch %d (MLflow run %s)", config["run_name"], start_epoch, run_id)

    model.to(device)
    ddp_kwargs = {"find_unused_parameters": False}
    if model.backbone_frozen:
        trainable = ray.train.torch.prepare_model(model.adapter, parallel_strategy_kwargs=ddp_kwargs)

        def forward(x: torch.Tensor) -> torch.Tensor:
            features = model.extract(x)  # frozen: no_grad, outside DDP
            return trainable(features.levels, features.pooled)
    else:
        trainable = ray.train.torch.prepare_model(model, parallel_strategy_kwargs=ddp_kwargs)

        def forward(x: torch.Tensor) -> torch.Tensor:
            return trainable(x)

    if cfg.compile:
        forward = torch.compile(forward)

    sampler = DistributedSampler(train_ds, num_replicas=world_size, rank=rank, shuffle=True, seed=params.base.seed)
    loader = DataLoader(
        train_ds, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.loader_workers, drop_last=False
    )
    steps_per_epoch = math.ceil(len(loader) / cfg.grad_accum)
    total_steps = cfg.epochs * steps_per_epoch
    warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_lambda(s, warmup_steps, total_steps))
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    scaler = grad_scaler(cfg.amp, device)
    if state is not None and state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)

    client = None
    if rank == 0:
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=config["tracking_uri"])
        counts = count_parameters(model)
        for key in ("trainable", "backbone", "total"):
            client.set_tag(run_id, f"params_{key}", str(counts[key]))
        client.log_metric(run_id, "trainable_params", counts["trainable"])
        for key, value in describe_precision(params.model.half_precision, cfg.amp, device).items():
            client.set_tag(run_id, f"train.{key}", value)

    end_epoch = cfg.epochs if cfg.max_epochs_per_run is None else min(cfg.epochs, start_epoch + cfg.max_epochs_per_run)
    val_report = None
    for epoch in range(start_epoch, end_epoch):
        sampler.set_epoch(epoch)
        train_ds.set_epoch(epoch)
        model.train()
        started = time.perf_counter()
        loss_sum = correct = seen = 0.0
        optimizer.zero_grad(set_to_none=True)
        progress = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=rank != 0, leave=False)
        for step, (x, y) in enumerate(progress):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            boundary = (step + 1) % cfg.grad_accum == 0 or step + 1 == len(loader)
            with amp_autocast(cfg.amp, device):  # the backbone's precision is its own switch (extract)
                logits = forward(x)
                loss = loss_fn(logits.float(), y)
            sync_ctx = trainable.no_sync() if (not boundary and hasattr(trainable, "no_sync")) else _nullcontext()
            with sync_ctx:
                scaler.scale(loss / cfg.grad_accum).backward()
            if boundary:
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
            status.update(epoch=epoch + 1, step=step + 1, steps=len(loader), state="training")
        elapsed = time.perf_counter() - started
        loss_sum, correct, seen = all_reduce_sum([loss_sum, correct, seen], world_size, device)
        peak_mb = all_reduce_max(peak_memory_mb(device), world_size, device)

        model.eval()
        val_started = time.perf_counter()
        val_report = _validate(forward, val_ds, rank, world_size, cfg.batch_size, device, len(classes), cfg.amp)
        record = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(1, seen),
            "train_acc": correct / max(1, seen),
            "val_loss": val_report["loss"],
            "val_acc": val_report["top1"],
            "val_top5": val_report["top5"],
            "val_mean_class_acc": val_report["mean_class_acc"],
            "clips_per_s": seen / max(elapsed, 1e-9),
            "peak_memory_mb": peak_mb,
            "epoch_time_s": elapsed,
            "val_time_s": time.perf_counter() - val_started,
            "lr": scheduler.get_last_lr()[0],
        }
        history.append(record)
        if rank == 0:
            client.log_batch(
                run_id,
                metrics=[
                    _metric(k, v, epoch + 1) for k, v in record.items() if k != "epoch" and math.isfinite(v)
                ],
            )
            logger.info("epoch %d/%d: %s", epoch + 1, cfg.epochs, {k: round(v, 4) for k, v in record.items()})

        ckpt_started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0:
                tmp_dir = Path(tmp)
                torch.save(
                    {
                        "model": model.trainable_state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict(),
                        "epoch": epoch + 1,
                        "history": history,
                        "run_id": run_id,
                    },
                    tmp_dir / TRAIN_STATE_FILE,
                )
                save_checkpoint(
                    tmp_dir / MODEL_FILE,
                    model,
                    classes,
                    extra={"epoch": epoch + 1, "run_id": run_id, "history": history, "run_name": config["run_name"]},
                )
                write_json_atomic(tmp_dir / META_FILE, {"epoch": epoch + 1, "run_id": run_id})
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(
                {"epoch": epoch + 1, "val_acc": record["val_acc"], "train_loss": record["train_loss"]},
                checkpoint=ckpt,
                checkpoint_dir_name=f"{CHECKPOINT_PREFIX}{epoch + 1:04d}",
            )
        status.update(epoch=epoch + 1, step=len(loader), steps=len(loader), state="checkpointed")
        if rank == 0:
            logger.info("epoch %d: checkpoint + report took %.2fs", epoch + 1, time.perf_counter() - ckpt_started)

    if rank == 0 and val_report is not None:
        _log_final_artifacts(client, run_id, params, classes, val_report, history)
    status.update(epoch=end_epoch, state="done")


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _metric(key: str, value: float, step: int):
    from mlflow.entities import Metric

    return Metric(key, float(value), int(time.time() * 1000), step)


# ----------------------------------------------------------------------------- driver side
def _start_ray(params: Params) -> None:
    """Connect to ``$RAY_ADDRESS`` or start a small local Ray (bounded object store, no dashboard).

    The job's runtime env (:func:`madapter.ray_runtime.worker_runtime_env`) puts ``madapter`` on
    the workers' path and filters Ray Train's per-second PlacementGroupCleaner retry warning,
    which a dashboard-less Ray would otherwise print dozens of times per run.  A Ray that the
    caller initialised already is used as it is.
    """
    import ray

    from madapter.ray_runtime import worker_runtime_env

    if ray.is_initialized():
        return
    runtime_env = worker_runtime_env()
    if os.environ.get("RAY_ADDRESS"):
        ray.init(runtime_env=runtime_env)
        return
    needed = params.train.num_workers * params.train.cpus_per_worker
    ray.init(
        num_cpus=max(os.cpu_count() or 1, math.ceil(needed)),
        object_store_memory=params.train.object_store_mb * 2**20,
        include_dashboard=False,
        runtime_env=runtime_env,
        log_to_driver=True,
    )


def check_cluster_fits(params: Params) -> None:
    """Refuse, before any worker starts, a run the Ray cluster cannot place.

    Ray Train waits for resources rather than failing, so ``train.use_gpu: true`` on a machine
    without GPUs would wait forever.  A local Ray (no ``RAY_ADDRESS``) cannot grow, so a shortfall
    is an error; a cluster may autoscale, so there it is only a warning.
    """
    import ray

    cfg = params.train
    have = ray.cluster_resources()
    need = {"CPU": cfg.num_workers * cfg.cpus_per_worker, "GPU": cfg.num_workers if cfg.use_gpu else 0}
    short = {k: (v, have.get(k, 0)) for k, v in need.items() if v > have.get(k, 0)}
    if not short:
        return
    kind, (wanted, present) = next(iter(short.items()))
    fix = ("set train.use_gpu: false, or run on a machine or RAY_ADDRESS cluster with GPUs" if kind == "GPU"
           else "lower train.num_workers or train.cpus_per_worker")
    message = (f"train: {cfg.num_workers} Ray worker(s) need {wanted:g} {kind} but the Ray cluster has {present:g}; "
               f"{fix}")
    if os.environ.get("RAY_ADDRESS"):
        logger.warning("%s (waiting: the cluster may scale up)", message)
        return
    raise StageError(message)


def _root_cause(err: BaseException) -> BaseException:
    """The user's exception inside Ray's wrappers (``RayTaskError.cause``, ``__cause__`` chains)."""
    seen: set[int] = set()
    while id(err) not in seen:
        seen.add(id(err))
        inner = getattr(err, "cause", None) or err.__cause__
        if not isinstance(inner, BaseException):
            break
        err = inner
    return err


def training_failure_line(err: BaseException, run_dir: Path) -> str:
    """One line for a failed ``fit()``: which rank (or the controller) failed, with what, and what next."""
    failures = getattr(err, "worker_failures", None)
    controller = getattr(err, "controller_failure", None)
    if failures:
        rank, cause = min(failures.items())
        what = f"Ray Train worker rank {rank} failed: {first_line(_root_cause(cause), 300)}"
    elif controller is not None:
        what = f"the Ray Train controller failed: {first_line(_root_cause(controller), 300)}"
    else:
        what = f"Ray Train failed: {first_line(_root_cause(err), 300)}"
    return (f"{run_dir}: {what}; the Ray log above has the traceback; after fixing it, run train again "
            f"(it resumes from the last epoch checkpoint)")


def _resolve_run(client, params: Params, run_dir: Path, experiment_id: str) -> tuple[str, bool]:
    """MLflow run id for this Ray run: the one stored in its latest checkpoint, else a new run."""
    from madapter.tracking import RUN_NAME_TAG, flatten_params, log_params_batched, provenance_tags

    latest = latest_checkpoint_dir(run_dir)
    if latest is not None:
        run_id = json.loads((latest / META_FILE).read_text())["run_id"]
        try:
            client.get_run(run_id)
        except Exception:  # noqa: BLE001 - any lookup failure means the run is not in this store
            raise ConfigError(
                f"{latest}: checkpoint belongs to MLflow run {run_id}, which is not in {client.tracking_uri}; "
                f"use the same mlflow.tracking_uri, or a new train.run_name to start over"
            ) from None
        logger.info("resuming Ray run %s from %s (MLflow run %s)", run_dir.name, latest.name, run_id)
        client.update_run(run_id, status="RUNNING")
        return run_id, True
    tags = {RUN_NAME_TAG: params.train.run_name, **provenance_tags(params)}
    run = client.create_run(experiment_id, run_name=params.train.run_name, tags=tags)
    log_params_batched(client, run.info.run_id, flatten_params(params))
    logger.info("new MLflow run %s (%s)", run.info.run_id, params.train.run_name)
    return run.info.run_id, False


def train(params: Params) -> TrainResult:
    """Train with Ray Train on ``data/frames/<ds>``; write ``outputs/train/{checkpoint.pt,run.json}``."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from madapter.run_status import (
        record_training_failure,
        record_training_interrupt,
        record_training_outcome,
    )
    from madapter.tracking import ensure_experiment, get_client

    paths = StagePaths.from_params(params)
    frames = paths.frames.resolve()
    if not (frames / "train" / "manifest.csv").is_file():
        raise ConfigError(f"{frames / 'train'}: no frame store found; run the decode stage first (python -m madapter decode)")
    val_split = _val_split(frames)
    if val_split == "test":
        logger.warning("%s has no val split: validating on the test split", params.dataset.name)

    client = get_client(params)
    experiment_id = ensure_experiment(client, params)
    storage = Path(params.train.storage_path).resolve()
    ray_name = ray_run_name(params)
    run_dir = storage / ray_name
    run_id, resumed = _resolve_run(client, params, run_dir, experiment_id)
    client.set_tag(run_id, "val_split", val_split)
    client.set_tag(run_id, "madapter.ray_run", ray_name)

    config = {
        "params": params.model_dump(mode="json"),
        "run_id": run_id,
        "run_name": params.train.run_name,
        "tracking_uri": client.tracking_uri,
        "frames_dir": str(frames),
        "run_dir": str(run_dir),
        "val_split": val_split,
    }
    _start_ray(params)
    try:
        check_cluster_fits(params)
    except StageError as err:
        record_training_failure(client, run_id, err)
        raise
    resources = {"CPU": params.train.cpus_per_worker}
    if params.train.use_gpu:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=config,
        torch_config=TorchConfig(backend="nccl" if params.train.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=params.train.num_workers, use_gpu=params.train.use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            name=ray_name,
            storage_path=str(storage),
            failure_config=FailureConfig(max_failures=params.train.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=params.train.checkpoints_to_keep),
        ),
    )
    try:
        result = trainer.fit()
    except (KeyboardInterrupt, SystemExit):
        # Ctrl-C (Ray's SIGINT handler aborts the controller and may sys.exit): resumable, not failed.
        record_training_interrupt(client, run_id)
        raise
    except Exception as err:
        record_training_failure(client, run_id, err)
        raise StageError(training_failure_line(err, run_dir)) from err
    if result.checkpoint is None:
        message = f"{run_dir}: training finished without a checkpoint (see the Ray worker logs above)"
        record_training_failure(client, run_id, message)
        raise RuntimeError(message)

    with result.checkpoint.as_directory() as ckpt_dir:
        ckpt_dir = Path(ckpt_dir)
        state = torch.load(ckpt_dir / TRAIN_STATE_FILE, map_location="cpu", weights_only=False)
        paths.train.mkdir(parents=True, exist_ok=True)
        out_ckpt = paths.train / "checkpoint.pt"
        shutil.copyfile(ckpt_dir / MODEL_FILE, out_ckpt.with_suffix(".pt.tmp"))
        os.replace(out_ckpt.with_suffix(".pt.tmp"), out_ckpt)

    epochs_done = int(state["epoch"])
    # FINISHED only when every epoch is trained; a budget stop is KILLED with a stop-reason tag,
    # so neither the MLflow UI nor the registry mistakes it for a finished model.
    completed = record_training_outcome(
        client, run_id, epochs_done, params.train.epochs, params.train.max_epochs_per_run
    )
    if not completed:
        logger.warning(
            "stopped after epoch %d/%d (train.max_epochs_per_run); run again to resume", epochs_done, params.train.epochs
        )
    train_result = TrainResult(
        checkpoint=out_ckpt,
        run_id=run_id,
        run_name=params.train.run_name,
        experiment=params.mlflow.experiment,
        tracking_uri=client.tracking_uri,
        epochs_done=epochs_done,
        epochs=params.train.epochs,
        completed=completed,
        ray_checkpoint=str(result.checkpoint.path),
        history=state["history"],
    )
    write_json_atomic(paths.train / "run.json", train_result.to_json())
    write_json_atomic(paths.train / "history.json", state["history"])  # per-epoch curves for `dvc plots`
    return train_result
