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
from madapter.data.store.frame_store import store_digest
from madapter.paths import StagePaths

RUN_CONTROL_KEYS = frozenset(
    {"run_name", "storage_path", "max_epochs_per_run", "max_failures", "checkpoints_to_keep", "object_store_mb",
     "loader_workers", "cpus_per_worker"}
)
"""``train`` keys that say how/where a run executes, not what it learns: changing them resumes."""


def training_fingerprint(params: Params, frames_dir: Path, features_dir: Path | None = None) -> str:
    """Short hash of what determines the trained weights: data identity, model, training recipe, seed.

    With ``train.source: features`` the data is the features (``features.json``'s digest, which
    ``features_dir`` must hold) and the recipe names the source; with ``frames`` the recipe is what
    it was before sources existed, so existing runs keep resuming.
    """
    recipe = {
        "seed": params.base.seed,
        "dataset": params.dataset.name,
        "data": store_digest(frames_dir),
        "decode": params.decode.model_dump(mode="json", exclude={"workers"}),  # how many processes decode changes nothing
        "model": params.model.model_dump(mode="json"),
        "train": {k: v for k, v in params.train.model_dump(mode="json").items()
                  if k not in RUN_CONTROL_KEYS and k != "source"},
    }
    if params.train.source == "features":
        from madapter.data.features.dataset import features_digest

        if features_dir is None:
            raise ValueError("train.source: features: the fingerprint needs the features directory")
        recipe.update(source="features", data=features_digest(features_dir))
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:10]


def ray_run_name(params: Params, paths: StagePaths | None = None) -> str:
    """``<train.run_name>-<fingerprint>``: the Ray run (checkpoint directory) these params resume
    (``paths``: the stage's resolved paths, when the caller has them)."""
    paths = paths or StagePaths.from_params(params)
    features = paths.features if params.train.source == "features" else None
    return f"{params.train.run_name}-{training_fingerprint(params, paths.frames, features)}"
