"""``dvc repro`` re-runs exactly what a params change invalidates, on the cached-features path.

The feature cache is only worth having if DVC keeps it honest: a change to anything that shapes the
stored features (the backbone, the tapped levels, a decode param) must re-run ``features`` and then
training, while a change to a training-only param (``train.lr``) must re-run train -> evaluate ->
register and reuse the features already on disk.  Those rules live in ``dvc.yaml`` (each stage's
``params`` and the features output being a dep of train), so they are checked here with the real DVC
on the real ``dvc.yaml``, in a throw-away copy of the repository that has really run every stage once.

What DVC would run after each edit is asked of DVC itself, cheaply:

- ``dvc status --json``: the stages whose OWN deps or params changed (no propagation);
- ``dvc repro --dry --force-downstream``: those stages and everything downstream of them, i.e. what
  ``dvc repro`` runs when each re-run stage writes new bytes (a dry run cannot know the new hashes,
  so without ``--force-downstream`` it would stop at the first stage it did not really run).

What a real ``dvc repro`` does after a ``train.lr`` edit (train -> evaluate -> register re-run, from the
features already on disk) is checked for real in tests/pipeline/test_pipeline_integration.py.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from madapter.config import load_params
from tests.common.processes import run
from tests.common.repo import copy_finished, write_params

pytestmark = pytest.mark.integration

DVC = [sys.executable, "-m", "dvc"]
FROM_FEATURES = {"features", "train", "evaluate", "register"}
"""What a change to anything that shapes the stored features must re-run (and nothing before decode)."""
AFTER_TRAIN = {"train", "evaluate", "register"}


def ran_stages(dvc_output: str) -> list[str]:
    """Stage names in DVC's ``Running stage 'X':`` lines (real and ``--dry`` runs print them alike)."""
    return re.findall(r"Running stage '([^']+)'", dvc_output)


@contextmanager
def params_changed(repo: Path, changes: dict[str, Any]) -> Iterator[None]:
    """``params.yaml`` with ``changes`` applied (and still valid) for the block, then back to the committed file."""
    try:
        write_params(repo, changes)
        load_params(repo / "params.yaml")  # the edit itself must be a valid configuration
        yield
    finally:
        run(["git", "checkout", "--", "params.yaml"], repo)


def directly_changed(repo: Path) -> dict[str, set[str]]:
    """``{stage: params keys DVC sees changed}`` for the stages whose own deps changed (``dvc status``)."""
    status = json.loads(run([*DVC, "status", "--json"], repo).stdout or "{}")
    changed: dict[str, set[str]] = {}
    for stage, entries in status.items():
        keys: set[str] = set()
        for entry in entries:
            if isinstance(entry, dict):
                for per_file in entry.get("changed deps", {}).values():
                    keys |= set(per_file) if isinstance(per_file, dict) else set()
        changed[stage] = keys
    return changed


def planned_stages(repo: Path) -> set[str]:
    """What ``dvc repro`` would run, when every re-run stage changes its output (module docstring)."""
    proc = run([*DVC, "repro", "--dry", "--force-downstream"], repo)
    return set(ran_stages(proc.stdout + proc.stderr))


@pytest.fixture(scope="module")
def ran_repo(finished_pipeline, tmp_path_factory) -> Path:
    """A copy of the session's repository whose whole graph has run once (:mod:`tests.common.fixtures`:
    the smallest params on the cached-features path, committed)."""
    repo = copy_finished(finished_pipeline[0], tmp_path_factory.mktemp("dvc_rerun") / "repo")
    assert directly_changed(repo) == {}, "a finished pipeline must leave nothing out of date"
    return repo


CHANGES = {
    # a different (random-init, never built by a dry run) timm ViT
    "backbone": ({"model": {"backbone": "vit_small_patch16_224"}}, "features", "model.backbone", FROM_FEATURES),
    "levels": ({"model": {"levels": [5, 11]}}, "features", "model.levels", FROM_FEATURES),
    "decode-size": ({"decode": {"size": 48}}, "features", "decode.size", {"decode"} | FROM_FEATURES),
    "lr": ({"train": {"lr": 0.0007}}, "train", "train", AFTER_TRAIN),
}


@pytest.mark.parametrize(("changes", "stage", "key", "expected"), list(CHANGES.values()), ids=list(CHANGES))
def test_a_param_change_reruns_what_it_shapes_and_nothing_upstream(ran_repo, changes, stage, key, expected):
    """Backbone, levels and decode params shape the stored features; ``train.lr`` only the training."""
    with params_changed(ran_repo, changes):
        changed = directly_changed(ran_repo)
        planned = planned_stages(ran_repo)
    assert key in changed.get(stage, set()), f"dvc.yaml: {stage}.params must list {key} (DVC saw {changed})"
    assert planned == expected, f"dvc repro would run {sorted(planned)}, expected {sorted(expected)}"
    if "features" not in expected:
        assert "features" not in changed, f"dvc.yaml: features.params must not list {key} ({changed})"
