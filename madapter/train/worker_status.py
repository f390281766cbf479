"""``<ray run dir>/workers/rank-<r>.json``: which process is which rank, and how far it got.

Ray's own logs name actors, not ranks; this file (pid, host, epoch, step, state, updated every
step) lets an operator find the process of a rank, and the fault-tolerance test pick a worker
to kill mid-epoch.  It also says what the worker trains (``source``, the model's class and
parameter count: a head on cached features holds no backbone).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from madapter.fileio import write_json_atomic

WORKER_STATUS_DIR = "workers"


class WorkerStatus:
    """The status file of one rank; :meth:`update` rewrites it atomically with the given fields."""

    def __init__(self, run_dir: Path, rank: int) -> None:
        self.path = Path(run_dir) / WORKER_STATUS_DIR / f"rank-{rank}.json"
        self.base = {"rank": rank, "pid": os.getpid(), "host": os.uname().nodename}

    def keep(self, **fields: Any) -> None:
        """Fields every later :meth:`update` writes too (what this worker trains)."""
        self.base.update(fields)

    def update(self, **fields: Any) -> None:
        write_json_atomic(self.path, {**self.base, **fields, "time": time.time()})
