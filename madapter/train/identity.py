"""Which Ray run a set of params continues: ``<train.run_name>-<fingerprint>``.

Ray Train V2 restores the latest checkpoint of a run started again under the same name.  The
fingerprint covers everything that shapes the weights, so changing a hyper-parameter
(``dvc exp run -S train.lr=...``) starts a fresh run instead of silently resuming the finished
old one, while changing how or where the run executes (:data:`RUN_CONTROL_KEYS`) resumes it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from madapter.config import Params
from madapter.data.store.format import store_digest
from madapter.paths import StagePaths

RUN_CONTROL_KEYS = frozenset(
    {"run_name", "storage_path", "max_epochs_per_run", "max_failures", "checkpoints_to_keep", "object_store_mb",
     "loader_workers", "cpus_per_worker"}
)
"""``train`` keys that say how/where a run executes, not what it learns: changing them resumes."""


def training_fingerprint(params: Params, frames_dir: Path) -> str:
    """Short hash of what determines the trained weights: data identity, model, training recipe, seed."""
    recipe = {
        "seed": params.base.seed,
        "dataset": params.dataset.name,
        "data": store_digest(frames_dir),
        "decode": params.decode.model_dump(mode="json", exclude={"workers"}),  # how many processes decode changes nothing
        "model": params.model.model_dump(mode="json"),
        "train": {k: v for k, v in params.train.model_dump(mode="json").items() if k not in RUN_CONTROL_KEYS},
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:10]


def ray_run_name(params: Params) -> str:
    """``<train.run_name>-<fingerprint>``: the Ray run (checkpoint directory) these params resume."""
    frames = StagePaths.from_params(params).frames
    return f"{params.train.run_name}-{training_fingerprint(params, frames)}"
