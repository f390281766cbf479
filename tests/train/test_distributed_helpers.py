"""The reduction helpers build their tensors on the device they are given (NCCL needs CUDA tensors).

Two real gloo processes reduce on an explicit ``cpu`` device; the same helpers, given a worker's
CUDA device, are what ``make gpu-check`` runs under NCCL with two GPUs.
"""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from madapter.distributed import all_reduce_max, all_reduce_sum, gather_objects


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world: int, port: int, results) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        device = torch.device("cpu")
        total = all_reduce_sum([1.0, float(rank), 10.0 * rank], world, device)
        peak = all_reduce_max(float(rank * 7), world, device)
        gathered = gather_objects({"rank": rank}, world, device)
        results[rank] = (total, peak, gathered)
    finally:
        dist.destroy_process_group()


def test_reductions_across_two_real_processes_on_an_explicit_device() -> None:
    world = 2
    with mp.Manager() as manager:
        results = manager.dict()
        mp.start_processes(_worker, args=(world, _free_port(), results), nprocs=world, start_method="spawn")
        got = dict(results)
    for rank in range(world):
        total, peak, gathered = got[rank]
        assert total == [2.0, 1.0, 10.0]
        assert peak == 7.0
        assert gathered == [{"rank": 0}, {"rank": 1}]


def test_one_worker_needs_no_process_group() -> None:
    assert not dist.is_initialized()
    cpu = torch.device("cpu")
    assert all_reduce_sum([1.0, 2.0], 1, cpu) == [1.0, 2.0]
    assert all_reduce_max(3.0, 1, cpu) == 3.0
    assert gather_objects("x", 1, cpu) == ["x"]
