"""The sweep tier's search space and params file; its data (``data_dir``), ``mlflow server`` and the
local Ray the ``python -m madapter tune`` subprocesses join are the session's (:mod:`tests.common.fixtures`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.common.synthetic_data import make_params

REPO = Path(__file__).resolve().parents[2]

SPACE: dict[str, Any] = {
    "lr": [1.0e-5, 0.1],                 # four decades: the trials' losses differ clearly
    "weight_decay": [],                  # not searched: the preset must not hold it
    "width": [32, 64],
    "levels": [None, [5, 11]],           # a choice of level lists (frames: any levels can be trained)
    "temporal": ["conv", "none"],
    "fusion": ["add", "gated"],
}


def write_sweep_params(root: Path, data: Path, tracking_uri: str, **tune: Any) -> Path:
    """A params file for a tiny sweep: the train tier's tiny data and model, trials on frames."""
    section = {"name": "sweep", "trials": 4, "max_epochs": 3, "grace_period": 1, "reduction_factor": 2,
               "metric": "train_loss", "max_concurrent_trials": 1, "storage_path": str(root / "tune"),
               "output": str(root / "best.yaml"), "space": SPACE, **tune}
    params = make_params(data, root / "outputs", tracking_uri, train={"warmup_epochs": 0.0, "source": "frames"},
                         tune=section)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False))
    return path
