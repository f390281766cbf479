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

One real ``dvc repro train`` after the ``train.lr`` edit then checks, for real, that DVC walks the whole
graph up to train and re-runs train alone, from the features already on disk (evaluate and register
are left out of that run only to keep the test short: tests/pipeline/test_pipeline_integration.py runs
them for real after a ``train.lr`` edit on the frames path).
"""

from __future__ import annotations

import copy
import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from madapter.config import load_params
from tests.pipeline.conftest import SMALLEST_OVERRIDES, copy_repo, deep_update, run, run_cli, write_params

pytestmark = pytest.mark.integration

DVC = [sys.executable, "-m", "dvc"]
GIT = ["git", "-c", "user.email=test@madapter.local", "-c", "user.name=madapter tests"]
FROM_FEATURES = {"features", "train", "evaluate", "register"}
"""What a change to anything that shapes the stored features must re-run (and nothing before decode)."""
AFTER_TRAIN = {"train", "evaluate", "register"}


def _rerun_overrides(repo: Path) -> dict[str, Any]:
    """The smallest real pipeline, training from cached features; everything lives under ``repo``.

    One stored training view is enough for one epoch; MLflow is a SQLite file given by absolute path
    because the Ray Train worker's working directory is not the stage's."""
    overrides = copy.deepcopy(SMALLEST_OVERRIDES)
    return deep_update(overrides, {
        "features": {"train_views": 1},
        "train": {"source": "features"},
        "mlflow": {"tracking_uri": f"sqlite:///{repo.resolve() / 'outputs' / 'mlflow.db'}"},
    })


def ran_stages(dvc_output: str) -> list[str]:
    """Stage names in DVC's ``Running stage 'X':`` lines (real and ``--dry`` runs print them alike)."""
    return re.findall(r"Running stage '([^']+)'", dvc_output)


def lock_stages(repo: Path) -> dict[str, dict[str, Any]]:
    """``dvc.lock``'s record of every stage: the deps, params and output hashes of its last run."""
    return yaml.safe_load((repo / "dvc.lock").read_text())["stages"]


def _commit(repo: Path, message: str) -> None:
    run([*GIT, "add", "-A"], repo)
    run([*GIT, "commit", "-q", "-m", message], repo)


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
def ran_repo(tmp_path_factory) -> Path:
    """A repository copy whose whole graph ``dvc repro`` has run once, with its params committed."""
    repo = copy_repo(tmp_path_factory.mktemp("dvc_rerun") / "repo")
    write_params(repo, _rerun_overrides(repo))
    checked = run_cli(["check-params", "--params", str(repo / "params.yaml")], repo)
    assert checked.returncode == 0, checked.stderr
    _commit(repo, "smallest params on the features path")
    proc = run([*DVC, "repro"], repo, timeout=900)
    assert set(ran_stages(proc.stdout + proc.stderr)) == FROM_FEATURES | {"download", "index", "scan", "decode"}
    assert directly_changed(repo) == {}, "a finished dvc repro must leave nothing out of date"
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


def test_lr_change_retrains_from_the_features_already_on_disk(ran_repo):
    """A real ``dvc repro train`` after a ``train.lr`` edit: DVC checks every stage before train and runs
    train alone; features is neither run nor rewritten (same ``dvc.lock`` record, timings file untouched)."""
    before = lock_stages(ran_repo)
    timings = ran_repo / "outputs/timings/features.json"
    timings_mtime = timings.stat().st_mtime_ns
    with params_changed(ran_repo, {"train": {"lr": 0.0007}}):
        proc = run([*DVC, "repro", "train"], ran_repo, timeout=900)
        after = lock_stages(ran_repo)
    output = proc.stdout + proc.stderr
    assert ran_stages(output) == ["train"], output[-3000:]
    for stage in ("download", "index", "scan", "decode", "features"):
        assert f"Stage '{stage}' didn't change, skipping" in output, f"{stage} was not checked and skipped"
    assert after["features"] == before["features"], "the features stage's deps, params or outputs changed"
    assert timings.stat().st_mtime_ns == timings_mtime, "the features stage ran (it rewrote its timings)"
    assert after["train"]["params"]["params.yaml"]["train"]["lr"] == 0.0007
    train_outs = {o["path"]: o["md5"] for o in after["train"]["outs"] if "md5" in o}
    before_outs = {o["path"]: o["md5"] for o in before["train"]["outs"] if "md5" in o}
    assert train_outs["outputs/train"] != before_outs["outputs/train"], "train did not write a new model"
