"""The pipeline's stages, named once: the CLI, the Prefect flow and the dvc.yaml check read this.

A stage is a command (``python -m madapter <name>``), the module that owns it and the function
that runs it with the resolved params.  The order is the data's: each stage reads what the one
before it wrote (download -> index -> scan -> decode -> features -> train -> evaluate -> register).
This module imports nothing heavy, so any tool can list the stages cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: ``<module>.<function>(params)`` runs it; ``help`` is its CLI help."""

    name: str
    module: str
    function: str
    help: str


STAGES: tuple[Stage, ...] = (
    Stage("download", "madapter.data.acquire.download", "download_dataset",
          "Download (or, for 'synthetic', generate) the dataset into data/raw/<ds>."),
    Stage("index", "madapter.data.index.stage", "build_index",
          "Write the train/val/test CSV index and classes.txt into data/index/<ds>."),
    Stage("scan", "madapter.data.store.scan", "scan_videos",
          "Check every indexed video decodes; write quarantine.csv and report.json."),
    Stage("decode", "madapter.data.store.decode", "decode_dataset",
          "Decode every good video to a fixed frame grid in a sharded frame store (JPEG or raw uint8)."),
    Stage("features", "madapter.data.features.stage", "extract_features",
          "Run the frozen backbone once over every stored view; write its outputs to data/features/<ds>."),
    Stage("train", "madapter.train.driver", "train",
          "Train the adapter with Ray Train; log to MLflow; write outputs/train."),
    Stage("evaluate", "madapter.evaluate", "evaluate",
          "Evaluate the trained checkpoint (clips x crops views); write metrics.json and plots."),
    Stage("register", "madapter.registry", "register",
          "Register the evaluated model in MLflow; promote to 'champion' if it beats the current one."),
)
"""Every pipeline stage, in pipeline (= dvc.yaml) order."""

STAGE_NAMES: tuple[str, ...] = tuple(stage.name for stage in STAGES)
"""Just the names, in order."""
