"""What each path measures, stated in full: never left to params.yaml's defaults.

The frames path writes :func:`gpu_overrides` into the copy's params.yaml for ``dvc repro``; the
NCCL run and the features path pass theirs as ``-S`` overrides (:func:`nccl_cli`, :func:`feature_cli`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from infra.gpu_check.common import FEATURES_OUT, NCCL_OUT, Context


def gpu_setup(amp: str) -> dict[str, Any]:
    """What BOTH paths run with, stated in full: everything on the GPU, bf16/fp16 backbone, the branch
    in ``amp``, 2 short epochs on 1 Ray worker.  Never left to params.yaml's defaults."""
    return {"model.half_precision": True, "train.use_gpu": True, "train.amp": amp, "train.epochs": 2,
            "train.num_workers": 1, "evaluate.device": "cuda"}


def gpu_overrides(amp: str) -> dict[str, dict[str, Any]]:
    """The frames path (the presets' path), written into the copy's params.yaml for ``dvc repro``:
    :func:`gpu_setup` with ``train.source: frames`` -- the full model, DDP over the adapter with the
    frozen backbone on the GPU -- and ``features.use_gpu: false`` (its features stage only records
    that it is disabled).  ``train.source`` is stated because params.yaml's default may be either."""
    sets = {**gpu_setup(amp), "train.source": "frames", "features.use_gpu": False, "train.run_name": "gpu-check"}
    nested: dict[str, dict[str, Any]] = {}
    for key, value in sets.items():
        section, name = key.split(".")
        nested.setdefault(section, {})[name] = value
    return nested


def write_params(repo: Path, overrides: dict[str, dict[str, Any]]) -> None:
    data = yaml.safe_load((repo / "params.yaml").read_text())
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))


def nccl_cli(ctx: Context) -> list[str]:
    """``python -m madapter train`` on the frames path with 2 workers, every measured key stated."""
    sets = {**gpu_setup(ctx.amp), "train.source": "frames", "train.num_workers": 2, "base.outputs_dir": NCCL_OUT,
            "train.storage_path": f"{NCCL_OUT}/ray", "train.run_name": "gpu-check-nccl"}
    return [sys.executable, "-m", "madapter", "train", *_set_args(sets)]


def _set_args(sets: dict[str, Any]) -> list[str]:
    """``-S key=value`` pairs as a user would type them (YAML booleans lower case)."""
    return [a for k, v in sets.items() for a in ("-S", f"{k}={str(v).lower() if isinstance(v, bool) else v}")]


def feature_sets(ctx: Context) -> dict[str, Any]:
    """The features path, stated in full over the copy's params.yaml: :func:`gpu_setup`, ``train.source:
    features`` and ``features.use_gpu: true`` (GPU extraction actors), its own outputs and MLflow store.

    Nothing is inherited from the frames path's overrides or params.yaml's defaults.  ``features.use_gpu``
    is part of the features' cache key, so train and evaluate must say it too; the MLflow store is named
    outright, so the subprocesses and this process use the same one.
    """
    return {
        **gpu_setup(ctx.amp), "train.source": "features", "features.use_gpu": True, "base.outputs_dir": FEATURES_OUT,
        "train.storage_path": f"{FEATURES_OUT}/ray", "train.run_name": "gpu-check-features",
        "mlflow.tracking_uri": f"sqlite:///{ctx.repo / FEATURES_OUT / 'mlflow.db'}",
    }


def features_params(ctx: Context):
    """The copy's params.yaml (GPU overrides applied) with :func:`feature_sets` on top."""
    from madapter.config import load_params

    return load_params(ctx.repo / "params.yaml", overrides=feature_sets(ctx))


def feature_cli(ctx: Context, stage: str) -> list[str]:
    """``python -m madapter <stage>`` with :func:`feature_sets` as ``-S`` overrides (as a user would type it)."""
    return [sys.executable, "-m", "madapter", stage, *_set_args(feature_sets(ctx))]
