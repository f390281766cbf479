"""Throw-away copies of this checkout, as a fresh clone would have them, and of a finished pipeline.

Integration tests never touch the developer's checkout: they copy the source tree (no data, no
outputs, no .venv) into a temporary git repository and run DVC / Prefect there.  Running every
stage once costs a minute or more, so the session runs it ONCE (the ``finished_pipeline`` fixture
in :mod:`tests.common.fixtures`) and each test module that needs a finished repository gets its
own copy (:func:`copy_finished`): the copy is a few MB and takes a second.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path
from typing import Any

import yaml

from tests.common.processes import REPO, run

TOP_LEVEL_SKIP = {
    ".git", ".venv", "data", "outputs", "mlruns", "mlartifacts", "mlflow.db", ".dvc-remote", ".prefect", "dvc.lock",
    ".pytest_cache", ".ruff_cache", "build", "dist",
}
"""What a fresh clone would not have: run products (incl. the dvc.lock of a local run), caches, the virtualenv."""
ANYWHERE_SKIP = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
GIT = ["git", "-c", "user.email=test@madapter.local", "-c", "user.name=madapter tests"]

# The smallest pipeline that still exercises every stage for real: 2 synthetic classes x 3 real
# mp4 videos, 8 decoded frames of 32x32, a random-init ViT-tiny on 4 frames, 1 epoch, 1 Ray worker.
SMALLEST_OVERRIDES: dict[str, Any] = {
    "dataset": {"synthetic": {"classes": 2, "videos_per_class": 3, "num_frames": 8, "size": 32}},
    "scan": {"workers": 1},
    "decode": {"frames_per_video": 8, "size": 32, "workers": 1},
    "model": {"img_size": 32, "num_frames": 4, "width": 32},
    "train": {"epochs": 1, "batch_size": 2, "num_workers": 1, "warmup_epochs": 0.0, "run_name": "pipeline-test"},
    "evaluate": {"batch_size": 4},
}


def _copy_ignore(directory: str, names: list[str]) -> set[str]:
    skipped = set(ANYWHERE_SKIP(directory, names))
    if Path(directory).resolve() == REPO:
        skipped |= TOP_LEVEL_SKIP & set(names)
    if Path(directory).resolve() == REPO / ".dvc":
        skipped |= {"cache", "tmp", "config.local"} & set(names)
    if Path(directory).resolve() == REPO / "benchmarks":
        skipped |= {"results"} & set(names)
    return skipped


def deep_update(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def write_params(repo: Path, changes: dict[str, Any]) -> dict[str, Any]:
    data = yaml.safe_load((repo / "params.yaml").read_text())
    deep_update(data, changes)
    (repo / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return data


def commit(repo: Path, message: str) -> None:
    run([*GIT, "add", "-A"], repo)
    run([*GIT, "commit", "-q", "-m", message], repo)


def copy_repo(dst: Path) -> Path:
    """A fresh git repository holding this checkout's source tree (what a clone would have)."""
    shutil.copytree(REPO, dst, ignore=_copy_ignore)
    run(["git", "init", "-q"], dst)
    commit(dst, "copy of the working tree")
    return dst


def copy_finished(finished: Path, dst: Path) -> Path:
    """A copy of a repository that has run the pipeline: git history, ``dvc.lock``, DVC cache and
    remote, outputs and the MLflow store, as if the pipeline had run in ``dst``.

    MLflow records artifact locations as absolute paths (``file:///.../outputs/mlartifacts``); they
    are moved to the copy's directory, so a copy never writes into the original or another copy.
    """
    shutil.copytree(finished, dst, symlinks=True)
    shutil.rmtree(dst / ".dvc" / "tmp", ignore_errors=True)  # DVC's locks and inode cache: per directory
    db = dst / "outputs" / "mlflow.db"
    if db.is_file():
        _relocate_sqlite_paths(db, str(finished.resolve()), str(dst.resolve()))
    return dst


def _relocate_sqlite_paths(db: Path, old: str, new: str) -> None:
    """Every text value of ``db`` that names a path under ``old`` names the same path under ``new``."""
    with sqlite3.connect(db) as conn:
        tables = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for column in conn.execute(f'PRAGMA table_info("{table}")').fetchall():
                name, kind = column[1], (column[2] or "").upper()
                if "CHAR" in kind or "TEXT" in kind or kind == "":
                    conn.execute(f'UPDATE "{table}" SET "{name}" = replace("{name}", ?, ?) WHERE "{name}" LIKE ?',
                                 (old, new, f"%{old}%"))


def lock_stages(repo: Path) -> dict[str, dict]:
    """``dvc.lock``'s record of every stage: the deps, params and output hashes of its last run."""
    return yaml.safe_load((repo / "dvc.lock").read_text())["stages"]


def mlflow_client(repo: Path):
    """A client of the repository's own MLflow store (the default ``outputs/mlflow.db``) and registry."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{repo / 'outputs' / 'mlflow.db'}"
    return MlflowClient(tracking_uri=uri, registry_uri=uri)
