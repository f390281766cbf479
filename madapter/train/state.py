"""What an epoch checkpoint holds, how rank 0 writes it and how a (re)started worker reads it back.

Every epoch rank 0 reports a Ray checkpoint ``epoch-<NNNN>/`` to Ray storage
``<train.storage_path>/<ray_run_name(params)>`` (a local or shared path, or a URI: :mod:`.storage`).
Ray Train V2 restores the latest one both after a worker failure (``FailureConfig``) and when the
same run is started again.  It holds:

* :data:`TRAIN_STATE_FILE`: everything to continue training: trainable weights, optimiser,
  scheduler and scaler state, the epoch, the history so far and the MLflow run id (so the
  resumed run logs into the same MLflow run);
* :data:`MODEL_FILE`: the deployable checkpoint (:func:`madapter.models.checkpoint.save_checkpoint`),
  which the driver copies to ``outputs/train/checkpoint.pt``; ``load_checkpoint`` rebuilds the
  full model from it whatever the training source (``extra["source"]`` says which it was);
* :data:`META_FILE`: epoch and MLflow run id as JSON, written last: the driver reads it without
  loading torch state, and a directory without it is not a complete checkpoint.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from madapter.fileio import atomic_path, write_json_atomic
from madapter.train.optim import Optimisation
from madapter.train.storage import filesystem, is_uri, join

if TYPE_CHECKING:
    from madapter.models.classifier import VideoClassifier
    from madapter.models.headless import FeatureClassifier

CHECKPOINT_PREFIX = "epoch-"
TRAIN_STATE_FILE = "train_state.pt"
MODEL_FILE = "model.pt"
META_FILE = "meta.json"


def checkpoint_dir_name(epoch: int) -> str:
    """``epoch-0003``: sorts by epoch, which :func:`latest_checkpoint_dir` relies on."""
    return f"{CHECKPOINT_PREFIX}{epoch:04d}"


def latest_checkpoint_dir(run_dir: Path | str) -> Path | str | None:
    """The newest complete epoch checkpoint in a Ray run directory (one with :data:`META_FILE`).

    ``run_dir`` is a local path (the answer is a ``Path``) or a storage URI (``s3://``, ``gs://``,
    ``file://``: the answer is a URI, listed through the ``pyarrow`` filesystem Ray writes with).
    """
    if not is_uri(run_dir):
        run_dir = Path(run_dir)
        candidates = sorted(d for d in run_dir.glob(f"{CHECKPOINT_PREFIX}*") if (d / META_FILE).is_file())
        return candidates[-1] if candidates else None
    import pyarrow.fs

    fs, root = filesystem(run_dir)
    entries = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    names = sorted(e.base_name for e in entries
                   if e.type == pyarrow.fs.FileType.Directory and e.base_name.startswith(CHECKPOINT_PREFIX))
    complete = [n for n in names if fs.get_file_info(f"{root}/{n}/{META_FILE}").type == pyarrow.fs.FileType.File]
    return join(str(run_dir), complete[-1]) if complete else None


def read_meta(checkpoint_dir: Path | str) -> dict[str, Any]:
    """``{"epoch", "run_id"}`` of a checkpoint directory (a local path or a storage URI)."""
    if not is_uri(checkpoint_dir):
        return json.loads((Path(checkpoint_dir) / META_FILE).read_text())
    fs, path = filesystem(join(str(checkpoint_dir), META_FILE))
    with fs.open_input_stream(path) as stream:
        return json.loads(stream.read())


def load_train_state(checkpoint_dir: Path) -> dict[str, Any]:
    """The training state of a checkpoint directory, on the CPU."""
    return torch.load(Path(checkpoint_dir) / TRAIN_STATE_FILE, map_location="cpu", weights_only=False)


@dataclass
class Resume:
    """Where a worker starts: epoch 0 of a new run, or after the epoch a checkpoint recorded."""

    epoch: int = 0
    history: list[dict] = field(default_factory=list)
    run_id: str = ""
    state: dict[str, Any] | None = None
    """The optimiser/scheduler/scaler state to load (:meth:`Optimisation.load_state_dict`)."""


def restore(model: VideoClassifier | FeatureClassifier, run_id: str) -> Resume:
    """Load Ray's checkpoint of this run (if any) into ``model``; a fresh :class:`Resume` otherwise.

    Call it before wrapping the model in DDP: DDP broadcasts rank 0's parameters when it wraps.
    """
    import ray.train

    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return Resume(run_id=run_id)
    with checkpoint.as_directory() as ckpt_dir:
        state = load_train_state(Path(ckpt_dir))
    model.load_trainable_state_dict(state["model"])
    return Resume(epoch=state["epoch"], history=state["history"], run_id=state["run_id"], state=state)


def save_epoch(directory: Path, model: VideoClassifier | FeatureClassifier, opt: Optimisation, classes: list[str],
               epoch: int, history: list[dict], run_id: str, run_name: str, extra: dict[str, Any] | None = None) -> None:
    """Write the three checkpoint files of ``epoch`` into ``directory`` (rank 0); ``extra`` (e.g. the
    training source) goes into the model file's ``extra`` with the epoch, run and history."""
    from madapter.models.checkpoint import save_checkpoint

    state = {"model": model.trainable_state_dict(), **opt.state_dict(),
             "epoch": epoch, "history": history, "run_id": run_id}
    torch.save(state, directory / TRAIN_STATE_FILE)
    save_checkpoint(directory / MODEL_FILE, model, classes,
                    extra={**(extra or {}), "epoch": epoch, "run_id": run_id, "history": history, "run_name": run_name})
    write_json_atomic(directory / META_FILE, {"epoch": epoch, "run_id": run_id})


def report_epoch(record: dict[str, Any], save: Callable[[Path], None] | None) -> None:
    """``ray.train.report`` the epoch's history record; with ``save`` (rank 0 only) also the
    checkpoint it writes into a temporary directory, which Ray copies to its storage.

    The whole record is reported because the Ray Train controller logs it to MLflow once it has
    registered the checkpoint (:mod:`madapter.train.epoch_metrics`): never before, so an epoch that
    a restarted worker trains again was never logged."""
    import ray.train

    epoch = record["epoch"]
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = None
        if save is not None:
            save(Path(tmp))
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(dict(record), checkpoint=checkpoint, checkpoint_dir_name=checkpoint_dir_name(epoch))


def export_model(checkpoint_dir: Path, target: Path) -> Path:
    """Copy a checkpoint's deployable model file to ``target`` atomically."""
    with atomic_path(target) as tmp:
        shutil.copyfile(Path(checkpoint_dir) / MODEL_FILE, tmp)
    return target
