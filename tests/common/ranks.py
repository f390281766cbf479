"""Run a function on two (or more) real ``torch.distributed`` gloo ranks, and get back what each returned.

Why not ``multiprocessing.Manager()`` for the results, as these tests once did: a Manager is a
*forked* copy of the test process.  In a pytest-xdist worker that copy inherits the worker's
channel to the controller, and when the worker died (its local Ray's raylet gone, its Manager still
running) the orphaned copy held that channel open: the controller never saw the worker go and
``make test`` waited forever.  Here every rank is spawned (a fresh interpreter, nothing inherited
but what is passed) and writes its result to a file.
"""

from __future__ import annotations

import datetime
import os
import pickle
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.common.processes import free_port

RENDEZVOUS_TIMEOUT = datetime.timedelta(seconds=60)


def run_ranks(fn: Callable[[int, int], Any], world: int = 2) -> list[Any]:
    """``fn(rank, world)`` in ``world`` spawned processes inside one gloo process group; the ranks'
    return values in rank order.  ``fn`` must be a module-level function (it is pickled by name)."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="ranks-") as out:
        mp.start_processes(_rank_main, args=(fn, world, port, out), nprocs=world, start_method="spawn")
        return [pickle.loads(Path(out, f"rank{rank}.pkl").read_bytes()) for rank in range(world)]


def _rank_main(rank: int, fn: Callable[[int, int], Any], world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=RENDEZVOUS_TIMEOUT)
    try:
        result = fn(rank, world)
    finally:
        dist.destroy_process_group()
    Path(out, f"rank{rank}.pkl").write_bytes(pickle.dumps(result))
