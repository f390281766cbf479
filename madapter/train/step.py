"""One training epoch and one validation pass of a worker (Made-With-ML's train_step / eval_step).

Both take a ``forward`` callable (model inputs -> logits) rather than the model, because with a
frozen backbone only the adapter is wrapped in DDP and ``forward`` runs backbone then adapter
(:func:`madapter.train.loop.data_parallel`).  Neither knows what it trains on: a batch is
``(inputs, labels)`` and the logits are ``forward(*inputs)`` (:func:`to_device`): a clip tensor
from the frame store, or ``(levels, pooled)`` cached backbone outputs
(:func:`madapter.data.features.dataset.collate_features`).  The training epoch returns this
worker's sums; validation gathers every worker's logits, so its report is exact and the same on
all ranks.
"""

from __future__ import annotations

import contextlib
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from madapter.distributed import all_reduce_max, all_reduce_sum, gather_objects
from madapter.models.precision import AmpMode, amp_autocast
from madapter.train.optim import Optimisation

Forward = Callable[..., torch.Tensor]
"""Model inputs (a batch's, as positional arguments) -> logits."""
Collate = Callable[[list], tuple]
"""Dataset items -> ``(inputs, labels)``."""


def to_device(inputs, device: torch.device) -> tuple:
    """A batch's model inputs as ``forward``'s positional arguments, on ``device``.

    A tensor is one argument (clips); a tuple holds the arguments, each a tensor or a list of
    tensors (``(levels, pooled)``).
    """
    args = inputs if isinstance(inputs, tuple) else (inputs,)
    return tuple([t.to(device, non_blocking=True) for t in a] if isinstance(a, list) else a.to(device, non_blocking=True)
                 for a in args)


def collate_clips(items: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Clip items ``(x [T,3,H,W], label)`` -> ``(x [B,T,3,H,W], labels [B])``."""
    return torch.stack([item[0] for item in items]), torch.tensor([item[1] for item in items])


@dataclass
class EpochSums:
    """An epoch's sums (per worker, or over all workers after :func:`reduce_epoch`)."""

    loss_sum: float
    correct: float
    seen: float
    seconds: float
    """This worker's wall time for the epoch (the reductions excluded)."""
    peak_memory_mb: float = 0.0
    """The hungriest worker's high-water mark (set by :func:`reduce_epoch`)."""


def peak_memory_mb(device: torch.device) -> float:
    """High-water mark of this worker: CUDA allocator peak on GPU, process max RSS on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def train_epoch(forward: Forward, trainable: torch.nn.Module, batches, opt: Optimisation, grad_accum: int,
                amp: AmpMode, device: torch.device, on_step: Callable[[int], None]) -> EpochSums:
    """One pass over ``batches``; an optimiser step every ``grad_accum`` batches and at the end.

    Between steps DDP's gradient all-reduce is skipped (``no_sync``): only the last backward
    before a step synchronises.  Returns this worker's sums; ``on_step(n)`` runs after batch n.
    """
    started = time.perf_counter()
    loss_sum = correct = seen = 0.0
    opt.optimizer.zero_grad(set_to_none=True)
    for step, (inputs, y) in enumerate(batches):
        args, y = to_device(inputs, device), y.to(device, non_blocking=True)
        boundary = (step + 1) % grad_accum == 0 or step + 1 == len(batches)
        with amp_autocast(amp, device):  # the backbone's precision is its own switch (extract)
            logits = forward(*args)
            loss = opt.loss_fn(logits.float(), y)
        no_sync = not boundary and hasattr(trainable, "no_sync")
        with trainable.no_sync() if no_sync else contextlib.nullcontext():
            opt.scaler.scale(loss / grad_accum).backward()
        if boundary:
            opt.step()
        loss_sum += loss.item() * len(y)
        correct += (logits.argmax(1) == y).sum().item()
        seen += len(y)
        on_step(step + 1)
    return EpochSums(loss_sum, correct, seen, time.perf_counter() - started)


def reduce_epoch(local: EpochSums, world_size: int, device: torch.device) -> EpochSums:
    """Sum the workers' sums, take the largest peak memory (a collective: every rank calls it)."""
    loss_sum, correct, seen = all_reduce_sum([local.loss_sum, local.correct, local.seen], world_size, device)
    peak = all_reduce_max(peak_memory_mb(device), world_size, device)
    return EpochSums(loss_sum, correct, seen, local.seconds, peak)


@torch.no_grad()
def validate(forward: Forward, dataset, rank: int, world_size: int, batch_size: int, device: torch.device,
             num_classes: int, amp: AmpMode, collate: Collate = collate_clips) -> dict:
    """Single-view validation, sharded over workers (rank r takes items r, r+W, ...), gathered exactly.

    ``collate`` turns the dataset's items into ``(inputs, labels)`` (as the training loader's does).
    """
    from madapter.metrics import classification_report

    indices = list(range(rank, len(dataset), world_size))
    logits_parts, label_parts = [], []
    loss_sum = 0.0
    for start in range(0, len(indices), batch_size):
        inputs, y = collate([dataset[i] for i in indices[start : start + batch_size]])
        args, y = to_device(inputs, device), y.to(device)
        with amp_autocast(amp, device):
            logits = forward(*args).float()
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


def epoch_record(epoch: int, sums: EpochSums, val: dict, val_seconds: float, lr: float) -> dict[str, float]:
    """The epoch's line of the history (MLflow metrics, ``history.json``, the checkpoint's curves)."""
    return {
        "epoch": epoch,
        "train_loss": sums.loss_sum / max(1, sums.seen),
        "train_acc": sums.correct / max(1, sums.seen),
        "val_loss": val["loss"],
        "val_acc": val["top1"],
        "val_top5": val["top5"],
        "val_mean_class_acc": val["mean_class_acc"],
        "clips_per_s": sums.seen / max(sums.seconds, 1e-9),
        "peak_memory_mb": sums.peak_memory_mb,
        "epoch_time_s": sums.seconds,
        "val_time_s": val_seconds,
        "lr": lr,
    }
