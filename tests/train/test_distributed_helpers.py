"""The reduction helpers build their tensors on the device they are given (NCCL needs CUDA tensors).

Two real gloo processes reduce on an explicit ``cpu`` device; the same helpers, given a worker's
CUDA device, are what ``make gpu-check`` runs under NCCL with two GPUs.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from madapter.distributed import all_reduce_max, all_reduce_sum, gather_objects
from tests.common.ranks import run_ranks


def _reduce(rank: int, world: int) -> tuple:
    device = torch.device("cpu")
    total = all_reduce_sum([1.0, float(rank), 10.0 * rank], world, device)
    peak = all_reduce_max(float(rank * 7), world, device)
    return total, peak, gather_objects({"rank": rank}, world, device)


def test_reductions_across_two_real_processes_on_an_explicit_device() -> None:
    for total, peak, gathered in run_ranks(_reduce, world=2):
        assert total == [2.0, 1.0, 10.0]
        assert peak == 7.0
        assert gathered == [{"rank": 0}, {"rank": 1}]


def test_one_worker_needs_no_process_group() -> None:
    assert not dist.is_initialized()
    cpu = torch.device("cpu")
    assert all_reduce_sum([1.0, 2.0], 1, cpu) == [1.0, 2.0]
    assert all_reduce_max(3.0, 1, cpu) == 3.0
    assert gather_objects("x", 1, cpu) == ["x"]
