"""Where every stage reads and writes, derived from ``params.yaml`` in one place.

Data (versioned by DVC) lives under ``base.data_dir``; run products (checkpoints, metrics,
plots, registry records) under ``base.outputs_dir``.  Each stage owns one output directory,
so DVC can track it as one ``out``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from madapter.config import Params


@dataclass(frozen=True)
class StagePaths:
    raw: Path
    """``data/raw/<ds>``: the dataset as downloaded and extracted."""
    index: Path
    """``data/index/<ds>``: ``train.csv``, ``val.csv``, ``test.csv``, ``classes.txt``."""
    scan: Path
    """``data/scan/<ds>``: ``quarantine.csv`` and ``report.json``."""
    frames: Path
    """``data/frames/<ds>``: the decoded frame store, one sub-directory per split."""
    features: Path
    """``data/features/<ds>``: the frozen backbone's outputs per split (``features.json``, shards)."""
    train: Path
    """``outputs/train``: ``checkpoint.pt`` (trainable weights + rebuild info) and ``run.json``."""
    evaluate: Path
    """``outputs/evaluate``: ``metrics.json`` and plot data."""
    register: Path
    """``outputs/register``: ``registration.json`` (model name, version, alias)."""
    timings: Path
    """``outputs/timings``: ``<stage>.json`` wall time and throughput of the data stages.

    Kept out of the stage outputs on purpose: those are hashed by DVC and must be the same bytes
    for the same inputs.  DVC metrics (``cache: false``) that no stage depends on.
    """

    @classmethod
    def from_params(cls, params: Params) -> StagePaths:
        ds = params.dataset.name
        data, out = Path(params.base.data_dir), Path(params.base.outputs_dir)
        return cls(
            raw=data / "raw" / ds,
            index=data / "index" / ds,
            scan=data / "scan" / ds,
            frames=data / "frames" / ds,
            features=data / "features" / ds,
            train=out / "train",
            evaluate=out / "evaluate",
            register=out / "register",
            timings=out / "timings",
        )
