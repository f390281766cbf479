"""The best configuration of a sweep as a preset: a partial params file of the searched keys only.

Only the searched keys, so the preset can go over any params.yaml (the full dataset, more
epochs) exactly like ``presets/*.yaml``: ``python -m madapter check-params --preset FILE`` and
``python -m madapter preset-args FILE | xargs dvc exp run``.  The header says which sweep,
trial and metric produced it; ``train.epochs`` is not in it (trials trained ``tune.max_epochs``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from madapter.config import Params, apply_override, params_from_dict
from madapter.fileio import write_text_atomic


def sections(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"train.lr": 0.001, "model.width": 64}`` -> ``{"model": {"width": 64}, "train": {"lr": 0.001}}``."""
    grouped: dict[str, dict[str, Any]] = {}
    for key in sorted(config):
        section, field = key.split(".", 1)
        grouped.setdefault(section, {})[field] = config[key]
    return grouped


def header(params: Params, trial_id: str, metric: float | None, epoch: int, run_id: str | None,
           parent_run_id: str, path: Path) -> str:
    """The comment block on top of the preset: provenance, and how to use it."""
    cfg = params.tune
    score = "no value" if metric is None else f"{metric:.4f}"
    return "\n".join([
        f"# Best configuration of the Ray Tune sweep '{cfg.name}' (ASHA, {cfg.trials} trials of at most",
        f"# {cfg.max_epochs} epochs, dataset {params.dataset.name}): trial {trial_id}, {cfg.metric} {score} "
        f"after epoch {epoch}.",
        f"# MLflow: trial run {run_id or '?'}, sweep (parent) run {parent_run_id}.",
        "# Only the searched keys; train.epochs is yours to choose. Use it over params.yaml:",
        f"#   python -m madapter check-params --preset {path}",
        f"#   python -m madapter preset-args {path} | xargs dvc exp run",
        "",
    ])


def write_preset(path: Path, params: Params, config: dict[str, Any], head: str) -> Path:
    """Write ``config`` (dotted keys) as a preset under ``head``, after checking it validates over ``params``."""
    data = params.model_dump(mode="json")
    for key, value in config.items():
        apply_override(data, key, value, str(path))
    params_from_dict(data, str(path))  # a preset check-params would refuse is a bug here, not the user's
    body = yaml.safe_dump(sections(config), sort_keys=False, default_flow_style=None)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, head + body)
    return path
