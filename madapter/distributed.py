"""Collective helpers for the training workers, correct on every backend.

NCCL only reduces CUDA tensors: a CPU tensor handed to ``all_reduce`` under ``backend="nccl"``
raises.  Every helper therefore takes the worker's device (``ray.train.torch.get_device()``) and
builds its tensors there; under gloo that device is the CPU.  With one worker they return their
input without touching ``torch.distributed`` (no process group needed).
"""

from __future__ import annotations

from typing import Any

import torch


def _dist():
    import torch.distributed as dist

    return dist


def all_reduce_sum(values: list[float], world_size: int, device: torch.device) -> list[float]:
    """Element-wise sum of ``values`` over all workers (float64, so counts of millions stay exact)."""
    if world_size == 1:
        return list(values)
    dist = _dist()
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def all_reduce_max(value: float, world_size: int, device: torch.device) -> float:
    """The largest ``value`` over all workers (e.g. the peak memory of the hungriest worker)."""
    if world_size == 1:
        return float(value)
    dist = _dist()
    tensor = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return float(tensor.item())


def gather_objects(obj: Any, world_size: int, device: torch.device) -> list[Any]:
    """Every worker's ``obj`` (picklable), in rank order.

    ``all_gather_object`` serialises through tensors on the *current* CUDA device under NCCL, so
    the worker's device is made current first; a worker whose current device is another rank's GPU
    would otherwise hang or corrupt the exchange.
    """
    if world_size == 1:
        return [obj]
    if device.type == "cuda":
        torch.cuda.set_device(device)
    out: list[Any] = [None] * world_size
    _dist().all_gather_object(out, obj)
    return out
