"""What every check shares: the thresholds, the one-line failure, the context one check hands the next."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger("gpu-check")

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
NO_CUDA = (
    "gpu-check: no CUDA device (torch.cuda.is_available() is False); run this on a machine with an NVIDIA GPU"
)
TARGET_GB = 12.7
"""DiST's published training memory, the lowest of the published peers (benchmarks.memory)."""
SERVED_MIN_MIB = 64
"""Device memory a process that really runs the model on the GPU takes at least (CUDA context + weights)."""
BUDGET_S = 600

TIMEOUTS = {"memory": 420, "pipeline": 480, "serve_start": 180, "nccl": 360, "check_params": 120,
            "features": 300, "train_features": 360,
            "batch_predict": 300}
"""Hang guards per subprocess (seconds), not budgets: on a working GPU each takes a fraction of this."""

FEATURES_OUT = "outputs-features"
"""``base.outputs_dir`` of the features checks: their training run and evaluation stay apart from the pipeline's."""
NCCL_OUT = "outputs-nccl"
MIN_COSINE = 0.99
"""GPU (bf16/fp16 backbone, stored fp16) vs CPU (fp32) features of the same view: at least this similar."""
MAX_SCORE_GAP = 0.05
"""Cached vs online evaluation on the GPU: largest difference of a video's averaged class probability."""
MIN_TOP1_AGREEMENT = 0.9
"""Cached vs online evaluation on the GPU: share of videos with the same predicted class."""

TOP_LEVEL_SKIP = {
    ".git", ".venv", "data", "outputs", "mlruns", "mlartifacts", "mlflow.db", ".dvc-remote", ".prefect", "dvc.lock",
    ".pytest_cache", ".ruff_cache", "build", "dist",
}
"""What a fresh clone would not have: run products, caches, the virtualenv (as tests/pipeline/conftest.py)."""


class CheckFailed(RuntimeError):
    """A check's expectation did not hold; the message is the one-line reason."""


@dataclass
class Context:
    """What the checks share: the work directory, the repository copy and results of earlier checks."""

    work: Path
    amp: str = "bf16"
    gpus: int = 1
    repo: Path | None = None
    params: Any = None
    predictions: list[Any] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)

    @property
    def logs(self) -> Path:
        path = self.work / "logs"
        path.mkdir(parents=True, exist_ok=True)
        return path
