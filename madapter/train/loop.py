"""The loop every Ray Train worker runs: setup, epochs, a checkpoint per epoch.

:func:`train_loop_per_worker` is the wiring only; each job it wires lives in its own module
(:mod:`.step` trains and validates, :mod:`.optim` updates, :mod:`.state` checkpoints and
restores, :mod:`.mlflow_log` logs the run's tags and artifacts; each epoch's metrics are logged by
the Ray Train controller once the epoch's checkpoint is registered, :mod:`.epoch_metrics`).  It
gets a frozen :class:`~madapter.train.worker_config.WorkerConfig` from the driver: the validated
params, absolute paths, the validation split and the MLflow run, so the worker never depends on
its cwd.

What the worker trains on is chosen at one place, :func:`madapter.train.source.build_source`
(``train.source``: the full model on frame-store clips, or the head alone on cached backbone
outputs); nothing below it asks which.

Only the trainable part is data-parallel (:func:`data_parallel`).  With a frozen backbone
(``madapter``/``linear``) ``model.adapter`` alone is wrapped in DDP, so the gradient all-reduce
never touches the backbone, which runs outside DDP under ``no_grad``; a head trained on cached
features is all trainable and wrapped whole.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from madapter.config import TrainSection
from madapter.ray_worker_setup import tag_package_lines
from madapter.stage_summary import epoch_is_logged, epoch_line
from madapter.train.mlflow_log import RunLog
from madapter.train.optim import Optimisation
from madapter.train.state import report_epoch, restore, save_epoch
from madapter.train.step import Forward, epoch_record, reduce_epoch, train_epoch, validate
from madapter.train.worker_status import WorkerStatus

if TYPE_CHECKING:
    from torch.utils.data import DataLoader, Dataset
    from torch.utils.data.distributed import DistributedSampler

    from madapter.train.source import Source
    from madapter.train.worker_config import WorkerConfig

logger = logging.getLogger(__name__)


@dataclass
class Worker:
    """This process's place in the Ray Train group: rank, group size, device, status file."""

    rank: int
    world_size: int
    device: torch.device
    status: WorkerStatus

    @classmethod
    def join(cls, cpus: float, status_dir: Path) -> Worker:
        """Read rank and device from Ray, make the device current, cap torch's threads at the CPUs
        this worker was given, and mark it ``starting`` in its status file (with the Ray node it runs
        on: which node a rank was on is what an operator needs after a node is lost)."""
        import ray
        import ray.train
        import ray.train.torch

        torch.set_num_threads(max(1, int(cpus)))
        context = ray.train.get_context()
        device = ray.train.torch.get_device()
        if device.type == "cuda":
            torch.cuda.set_device(device)  # collectives and new CUDA tensors default to the current device
        worker = cls(context.get_world_rank(), context.get_world_size(), device,
                     WorkerStatus(status_dir, context.get_world_rank()))
        worker.status.keep(node_id=ray.get_runtime_context().get_node_id(), node_ip=ray.util.get_node_ip_address())
        worker.status.update(epoch=None, step=0, state="starting")
        return worker

    def placement(self) -> list[dict[str, Any]]:
        """Every rank's ``{rank, node_id, node_ip, host}`` (a collective: every rank must call it)."""
        import torch.distributed as dist

        mine = {key: self.status.base[key] for key in ("rank", "node_id", "node_ip", "host")}
        if not dist.is_available() or not dist.is_initialized() or self.world_size == 1:
            return [mine]
        everyone: list[Any] = [None] * self.world_size
        dist.all_gather_object(everyone, mine)
        return everyone


@dataclass
class Training:
    """What the epochs work on, built once per worker by :func:`train_loop_per_worker`."""

    source: Source
    """The model (unwrapped: what checkpoints save), the classes, the datasets and their collate."""
    trainable: torch.nn.Module
    """The DDP-wrapped module that gets gradients (``model.adapter`` when the backbone is frozen)."""
    forward: Forward
    sampler: DistributedSampler
    loader: DataLoader
    opt: Optimisation

    @property
    def model(self) -> torch.nn.Module:
        return self.source.model

    @property
    def classes(self) -> list[str]:
        return self.source.classes


def train_loop_per_worker(config: WorkerConfig) -> None:
    """One Ray Train worker: data shard, model (DDP on the trainable part), epochs, checkpoints.

    The driver binds ``config`` (``functools.partial``), so Ray calls this with no argument."""
    from madapter.train.source import build_source

    params = config.params
    cfg, seed = params.train, params.base.seed
    tag_package_lines()  # the driver's terminal tells this worker's warnings from its INFO lines
    worker = Worker.join(cfg.cpus_per_worker, config.status_dir)
    placement = worker.placement()
    torch.manual_seed(seed)  # identical init on every rank (DDP also broadcasts rank 0's)
    source = build_source(params, config.data)
    model = source.model
    worker.status.keep(source=cfg.source, model=type(model).__name__,
                       model_parameters=sum(p.numel() for p in model.parameters()))
    resume = restore(model, config.run_id)  # before DDP wraps the model: it broadcasts rank 0's weights
    worker.status.keep(resumed_after_epoch=resume.epoch)
    if resume.epoch and worker.rank == 0:
        logger.info("resuming run %s after epoch %d (MLflow run %s)", cfg.run_name, resume.epoch, resume.run_id)
    model.to(worker.device)
    trainable, forward = data_parallel(model, cfg.compile)
    sampler, loader = _loader(source.train_ds, source.collate, cfg, worker, seed)
    opt = Optimisation.build(model, cfg, len(loader), worker.device)
    opt.load_state_dict(resume.state)
    run_log = RunLog(config.tracking_uri, resume.run_id) if worker.rank == 0 else None
    if run_log is not None:
        features = config.data.features
        run_log.setup(model, params, worker.device, None if features is None else str(features))
        run_log.client.set_tag(run_log.run_id, WORKER_NODES_TAG, placement_tag(placement))
    t = Training(source, trainable, forward, sampler, loader, opt)

    history, val_report = resume.history, None
    end_epoch = cfg.epochs if cfg.max_epochs_per_run is None else min(cfg.epochs, resume.epoch + cfg.max_epochs_per_run)
    for epoch in range(resume.epoch + 1, end_epoch + 1):  # numbered from 1, as in history and checkpoints
        record, val_report = _train_and_validate(t, worker, cfg, epoch)
        history.append(record)
        if worker.rank == 0:
            # at most ~EPOCH_LINES lines per run reach the terminal; every record is in history.json
            shown = epoch_is_logged(epoch, cfg.epochs, first=resume.epoch + 1)
            logger.log(logging.INFO if shown else logging.DEBUG, "%s", epoch_line(record, cfg.epochs))
        # MLflow gets the record from the Ray Train controller once it has registered this epoch's
        # checkpoint (madapter.train.epoch_metrics), so an epoch trained again after a lost node is
        # never logged twice.
        _checkpoint(t, worker, record, history, resume.run_id, cfg.run_name)

    if run_log is not None and val_report is not None:
        run_log.final(params, t.classes, val_report, history)
    worker.status.update(epoch=end_epoch, state="done")


WORKER_NODES_TAG = "ray.worker_nodes"
"""MLflow tag: the Ray nodes the run's workers run on (the latest attempt's), with their ranks."""


def placement_tag(placement: list[dict[str, Any]], limit: int = 5000) -> str:
    """``<node id> (<ip>): ranks 0,2; ...``: where the ranks run, one entry per node (at most ``limit`` chars)."""
    nodes: dict[str, dict[str, Any]] = {}
    for entry in sorted(placement, key=lambda e: e["rank"]):
        node = nodes.setdefault(entry["node_id"], {"ip": entry["node_ip"], "ranks": []})
        node["ranks"].append(str(entry["rank"]))
    text = "; ".join(f"{node_id} ({n['ip']}): ranks {','.join(n['ranks'])}" for node_id, n in nodes.items())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def data_parallel(model: torch.nn.Module, compile_forward: bool) -> tuple[torch.nn.Module, Forward]:
    """Wrap the trainable part in DDP (Ray's ``prepare_model``); return it and inputs -> logits.

    A model with a frozen backbone (``VideoClassifier.backbone_frozen``): only ``model.adapter``
    is wrapped and ``forward(x)`` runs ``model.extract`` (no_grad, outside DDP) then the wrapped
    adapter.  Anything else is trainable as a whole and wrapped whole, ``forward(*inputs)``: a
    ``full``/``inserted`` model on clips, or a head on cached features (``(levels, pooled)``).
    """
    import ray.train.torch

    ddp_kwargs = {"find_unused_parameters": False}
    if getattr(model, "backbone_frozen", False):
        trainable = ray.train.torch.prepare_model(model.adapter, parallel_strategy_kwargs=ddp_kwargs)

        def forward(x: torch.Tensor) -> torch.Tensor:
            features = model.extract(x)  # frozen: no_grad, outside DDP
            return trainable(features.levels, features.pooled)
    else:
        trainable = ray.train.torch.prepare_model(model, parallel_strategy_kwargs=ddp_kwargs)

        def forward(*inputs) -> torch.Tensor:
            return trainable(*inputs)

    return trainable, torch.compile(forward) if compile_forward else forward


def _loader(train_ds: Dataset, collate: Callable[[list], tuple], cfg: TrainSection, worker: Worker,
            seed: int) -> tuple[DistributedSampler, DataLoader]:
    """This rank's shard of the training set (``DistributedSampler``) and its DataLoader."""
    from torch.utils.data.distributed import DistributedSampler

    from madapter.train.source import train_loader

    sampler = DistributedSampler(train_ds, num_replicas=worker.world_size, rank=worker.rank, shuffle=True, seed=seed)
    return sampler, train_loader(train_ds, collate, sampler, cfg.batch_size, cfg.loader_workers, worker.device)


def _train_and_validate(t: Training, worker: Worker, cfg: TrainSection, epoch: int) -> tuple[dict, dict]:
    """Epoch ``epoch`` (1-based): train on this rank's shard, reduce, validate; the history record."""
    from tqdm import tqdm

    t.sampler.set_epoch(epoch - 1)
    t.source.train_ds.set_epoch(epoch - 1)
    t.model.train()
    # disable=None: a bar only on a terminal (a Ray worker's stderr is a file, a DVC stage's a pipe);
    # a bar redrawn into a file or pipe became one logged line per refresh
    batches = tqdm(t.loader, desc=f"epoch {epoch}/{cfg.epochs}", disable=True if worker.rank != 0 else None,
                   leave=False)

    def on_step(step: int) -> None:
        worker.status.update(epoch=epoch, step=step, steps=len(t.loader), state="training")

    local = train_epoch(t.forward, t.trainable, batches, t.opt, cfg.grad_accum, cfg.amp, worker.device, on_step)
    sums = reduce_epoch(local, worker.world_size, worker.device)
    t.model.eval()
    val_started = time.perf_counter()
    report = validate(t.forward, t.source.val_ds, worker.rank, worker.world_size, cfg.batch_size, worker.device,
                      len(t.classes), cfg.amp, t.source.collate)
    return epoch_record(epoch, sums, report, time.perf_counter() - val_started, t.opt.lr), report


def _checkpoint(t: Training, worker: Worker, record: dict, history: list[dict], run_id: str, run_name: str) -> None:
    """Report the epoch to Ray, with rank 0's checkpoint attached (every rank must report)."""
    epoch, started = int(record["epoch"]), time.perf_counter()

    def save(directory: Path) -> None:
        save_epoch(directory, t.model, t.opt, t.classes, epoch, history, run_id, run_name, t.source.checkpoint_extra)

    report_epoch(record, save if worker.rank == 0 else None)
    worker.status.update(epoch=epoch, step=len(t.loader), steps=len(t.loader), state="checkpointed")
    if worker.rank == 0:
        logger.debug("epoch %d: checkpoint + report took %.2fs", epoch, time.perf_counter() - started)
