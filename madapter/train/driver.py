"""The train stage on the driver: check, open the MLflow run, run Ray Train, write ``outputs/train``.

:func:`train` resolves the stage's paths once and everything a worker must not resolve itself
(absolute paths, the tracking URI, the MLflow run, the validation split: the index's, see
:func:`madapter.data.index.schema.eval_split`) and hands it to
:func:`madapter.train.loop.train_loop_per_worker` as one frozen
:class:`~madapter.train.worker_config.WorkerConfig`, bound to the loop function (Ray pickles it to
every worker).

A run is resumable: the Ray run name carries a fingerprint of the recipe
(:mod:`madapter.train.identity`), Ray Train V2 restores the run's latest epoch checkpoint
after a worker failure (a lost node included) and when the same run is started again, and the
MLflow run id stored in that checkpoint (:mod:`madapter.train.state`) makes the resumed run log
into the same MLflow run, each epoch once (:mod:`madapter.train.epoch_metrics`).  On a
multi-node cluster the storage must be shared by every node, which is checked before training
(:mod:`madapter.train.storage`).  How a run ended (all epochs, stopped by
``train.max_epochs_per_run``, failed, interrupted) is recorded on it by :mod:`madapter.run_status`.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from madapter.config import ConfigError, Params
from madapter.errors import StageError, first_line
from madapter.fileio import write_json_atomic
from madapter.paths import StagePaths
from madapter.ray_runtime import start_ray as _start_ray
from madapter.ray_worker_setup import TRAIN_LOG_LEVEL
from madapter.train.identity import ray_run_name
from madapter.train.state import export_model, latest_checkpoint_dir, load_train_state, read_meta
from madapter.train.storage import check_shared_storage, join, local_dir, resolve_storage
from madapter.train.worker_config import WorkerConfig

logger = logging.getLogger(__name__)

CONTROLLER_POLL_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
PREEMPTION_WATCHER_ENV = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
RAY_TRAIN_DEFAULTS: dict[str, str] = {CONTROLLER_POLL_ENV: "0.25", PREEMPTION_WATCHER_ENV: "0"}
"""Ray Train settings madapter's runs use unless the user set the variable (Ray reads them in the
process that calls ``fit()`` and passes them to the controller: ``ENV_VARS_TO_PROPAGATE``).

- The controller polls the workers every 0.25 s, not Ray's 2 s: a worker's ``ray.train.report``
  waits in a queue of one until the next poll collects it, so with one report per epoch no epoch
  can take less than a poll.  On cached features an epoch can be a fraction of a second: the demo's
  order-blind baseline spent 46 s on 10 epochs of 0.2 s, and the tests' 20-epoch run of 0.6 s
  epochs went from 54 s to 26 s.  A poll is one small actor call per worker; on a large cluster, where epochs
  are minutes long, set it back to 2 or more.
- No preemption watcher: Ray Train starts one more actor per worker group that polls for draining
  nodes and only logs them, or hands them to a loop that asks ``ray.train.get_preemption_info()``
  (ours does not: a lost node is a worker failure, retried from the last checkpoint).  It cost a
  process per run and printed an ERROR line ("... has constructor arguments in the object store and
  max_restarts > 0") into every training log.
"""


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


def train(params: Params, *, parent_run_id: str | None = None, callbacks: Sequence = ()) -> TrainResult:
    """Train with Ray Train on ``data/frames/<ds>`` (or, with ``train.source: features``, on the cached
    backbone outputs in ``data/features/<ds>``); write ``outputs/train/{checkpoint.pt,run.json,history.json}``.

    ``parent_run_id`` makes a new MLflow run a child of that run (a Ray Tune sweep's run,
    :mod:`madapter.tune`); ``callbacks`` are Ray Train callbacks for the run (a sweep's
    ``TuneReportCallback``).  The defaults are the train stage."""
    from madapter.run_status import record_training_failure
    from madapter.tracking import get_client
    from madapter.train.epoch_metrics import EpochMetrics
    from madapter.train.source import train_data

    paths = StagePaths.from_params(params)
    data = train_data(params, paths)  # checked here, before any MLflow run or Ray worker
    client = get_client(params)
    storage = resolve_storage(params.train.storage_path)  # an absolute path, or a URI as given
    ray_name = ray_run_name(params, paths)
    run_dir = join(storage, ray_name)
    _start_ray(params)
    check_shared_storage(storage)  # a multi-node cluster: every node must see it (before any MLflow run)
    run_id = _open_run(client, params, run_dir, parent_run_id)
    client.set_tag(run_id, "val_split", data.val_split)
    client.set_tag(run_id, "madapter.ray_run", ray_name)
    client.set_tag(run_id, "train_source", params.train.source)
    config = WorkerConfig(params=params, data=data, run_id=run_id, tracking_uri=client.tracking_uri,
                          status_dir=status_dir(run_dir, ray_name))
    try:
        check_cluster_fits(params)
    except StageError as err:
        record_training_failure(client, run_id, err)
        raise
    callbacks = [EpochMetrics(client.tracking_uri, run_id), *callbacks]
    result = _fit(_trainer(params, config, ray_name, storage, callbacks), client, run_id, run_dir)
    return _write_outputs(params, paths, result, client, run_id)


def status_dir(run_dir: str, ray_name: str) -> Path:
    """Where the workers write ``workers/rank-<r>.json``: the run directory when it is on a filesystem
    (a path or ``file://``), else (``s3://``, ``gs://``: a write per step would be a request per step)
    a local directory on each worker's node."""
    local = local_dir(run_dir)
    return local if local is not None else Path(tempfile.gettempdir()) / "madapter-workers" / ray_name


def _open_run(client, params: Params, run_dir: str, parent_run_id: str | None = None) -> str:
    """MLflow run id for this Ray run: the one stored in its latest checkpoint, else a new run
    (a child of ``parent_run_id`` when given: tag ``mlflow.parentRunId``)."""
    from madapter.tracking import (
        RUN_NAME_TAG,
        ensure_experiment,
        flatten_params,
        log_params_batched,
        provenance_tags,
    )

    experiment_id = ensure_experiment(client, params)
    latest = latest_checkpoint_dir(run_dir)
    if latest is not None:
        run_id = read_meta(latest)["run_id"]
        try:
            client.get_run(run_id)
        except Exception:  # noqa: BLE001 - any lookup failure means the run is not in this store
            raise ConfigError(
                f"{latest}: checkpoint belongs to MLflow run {run_id}, which is not in {client.tracking_uri}; "
                f"use the same mlflow.tracking_uri, or a new train.run_name to start over"
            ) from None
        logger.info("resuming Ray run %s from %s (MLflow run %s)", run_dir, latest, run_id)
        client.update_run(run_id, status="RUNNING")
        return run_id
    tags = {RUN_NAME_TAG: params.train.run_name, **provenance_tags(params)}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(experiment_id, run_name=params.train.run_name, tags=tags)
    log_params_batched(client, run.info.run_id, flatten_params(params))
    logger.info("new MLflow run %s (%s)", run.info.run_id, params.train.run_name)
    return run.info.run_id


def check_cluster_fits(params: Params) -> None:
    """Refuse, before any worker starts, a run the Ray cluster cannot place.

    Ray Train waits for resources rather than failing, so ``train.use_gpu: true`` on a machine
    without GPUs would wait forever.  A local Ray (no ``RAY_ADDRESS``) cannot grow, so a shortfall
    is an error; a cluster may autoscale, so there it is only a warning.

    A local Ray's GPU count is not enough either: Ray counts GPUs through NVML, which also works on
    a driver too old for this torch's CUDA, so ``train.use_gpu`` where torch cannot use CUDA is refused
    too.  Both local refusals name a GPU torch cannot use, if there is one (:mod:`madapter.gpu_diagnosis`).
    """
    import ray

    from madapter.gpu_diagnosis import cuda_refusal, with_gpu_diagnosis

    cfg = params.train
    have = ray.cluster_resources()
    local = not os.environ.get("RAY_ADDRESS")
    need = {"CPU": cfg.num_workers * cfg.cpus_per_worker, "GPU": cfg.num_workers if cfg.use_gpu else 0}
    short = {k: (v, have.get(k, 0)) for k, v in need.items() if v > have.get(k, 0)}
    if not short:
        if cfg.use_gpu and local:
            import torch

            if not torch.cuda.is_available():
                raise StageError(cuda_refusal(
                    "train.use_gpu: true", f"on this machine (the local Ray counts {have.get('GPU', 0):g} GPU)",
                    "set train.use_gpu: false, or run where torch can use a GPU"))
        return
    kind, (wanted, present) = next(iter(short.items()))
    fix = ("set train.use_gpu: false, or run on a machine or RAY_ADDRESS cluster with GPUs" if kind == "GPU"
           else "lower train.num_workers or train.cpus_per_worker")
    message = (f"train: {cfg.num_workers} Ray worker(s) need {wanted:g} {kind} but the Ray cluster has {present:g}; "
               f"{fix}")
    if not local:
        logger.warning("%s (waiting: the cluster may scale up)", message)
        return
    raise StageError(with_gpu_diagnosis(message) if kind == "GPU" else message)


def _trainer(params: Params, config: WorkerConfig, ray_name: str, storage: str, callbacks: Sequence = ()):
    """The ``TorchTrainer``: the worker loop with ``config`` bound to it (``functools.partial``: Ray's
    ``train_loop_config`` is a plain dict, which Ray also stringifies for its dashboard; the typed
    config travels pickled with the function), ``train.num_workers`` workers (gloo on CPU, nccl on
    GPU), the run's storage (a path or a URI, passed as it is), retries after worker failures (a
    lost node is one: the group restarts from the last registered checkpoint once it can be placed
    again), how many epoch checkpoints to keep, the Ray Train ``callbacks`` (the epoch metrics'
    MLflow log, a sweep's ``TuneReportCallback``), and Ray Train's console level (warnings only:
    :data:`madapter.ray_worker_setup.TRAIN_LOG_LEVEL`)."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from madapter.train.loop import train_loop_per_worker

    cfg = params.train
    resources = {"CPU": cfg.cpus_per_worker}
    if cfg.use_gpu:
        resources["GPU"] = 1
    return TorchTrainer(
        functools.partial(train_loop_per_worker, config),
        torch_config=TorchConfig(backend="nccl" if cfg.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=cfg.num_workers, use_gpu=cfg.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=ray_name,
            storage_path=storage,
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.checkpoints_to_keep),
            callbacks=list(callbacks),
            logging_config=LoggingConfig(log_level=TRAIN_LOG_LEVEL),  # Ray Train's INFO chatter: its log files only
        ),
    )


def _fit(trainer, client, run_id: str, run_dir: str):
    """``trainer.fit()``; a failure marks the MLflow run FAILED (Ctrl-C: KILLED) and becomes one line."""
    from madapter.run_status import record_training_failure, record_training_interrupt

    for name, value in RAY_TRAIN_DEFAULTS.items():
        os.environ.setdefault(name, value)
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
    return result


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


def training_failure_line(err: BaseException, run_dir: str | Path) -> str:
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


def _write_outputs(params: Params, paths: StagePaths, result, client, run_id: str) -> TrainResult:
    """Copy the last checkpoint's model to ``outputs/train/checkpoint.pt``, record how the run ended
    in MLflow, and write ``run.json`` and ``history.json`` (per-epoch curves for ``dvc plots``)."""
    from madapter.run_status import record_training_outcome
    from madapter.train.epoch_metrics import log_missing_epochs

    with result.checkpoint.as_directory() as ckpt_dir:
        state = load_train_state(Path(ckpt_dir))
        out_ckpt = export_model(Path(ckpt_dir), paths.train / "checkpoint.pt")
    cfg = params.train
    epochs_done = int(state["epoch"])
    log_missing_epochs(client, run_id, state["history"])  # only after a controller crash mid-log
    # FINISHED only when every epoch is trained; a budget stop is KILLED with a stop-reason tag,
    # so neither the MLflow UI nor the registry mistakes it for a finished model.
    completed = record_training_outcome(client, run_id, epochs_done, cfg.epochs, cfg.max_epochs_per_run)
    if not completed:
        logger.warning("stopped after epoch %d/%d (train.max_epochs_per_run); run again to resume", epochs_done, cfg.epochs)
    train_result = TrainResult(
        checkpoint=out_ckpt,
        run_id=run_id,
        run_name=cfg.run_name,
        experiment=params.mlflow.experiment,
        tracking_uri=client.tracking_uri,
        epochs_done=epochs_done,
        epochs=cfg.epochs,
        completed=completed,
        ray_checkpoint=str(result.checkpoint.path),
        history=state["history"],
    )
    write_json_atomic(paths.train / "run.json", train_result.to_json())
    write_json_atomic(paths.train / "history.json", state["history"])
    return train_result
