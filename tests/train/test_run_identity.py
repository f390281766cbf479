"""Which parameter changes resume a Ray run and which start a fresh one."""

from __future__ import annotations

import json
from pathlib import Path

from madapter.config import params_from_dict
from madapter.train.identity import training_fingerprint


def _fingerprint(frames: Path, **sections) -> str:
    return training_fingerprint(params_from_dict(sections), frames)


def test_recipe_changes_start_a_new_run_but_run_control_changes_resume(tmp_path: Path) -> None:
    (tmp_path / "store.json").write_text(json.dumps({"videos": 10}))
    base = _fingerprint(tmp_path)
    assert base == _fingerprint(tmp_path), "fingerprint must be stable"
    # What shapes the weights -> another Ray run (no silent resume of the old, finished one).
    assert _fingerprint(tmp_path, train={"lr": 0.01}) != base
    assert _fingerprint(tmp_path, model={"temporal": "attention"}) != base
    assert _fingerprint(tmp_path, base={"seed": 1}) != base
    # How/where it runs -> the same Ray run, so a stopped or crashed run resumes.
    assert _fingerprint(tmp_path, train={"max_epochs_per_run": 1, "max_failures": 5}) == base
    assert _fingerprint(tmp_path, train={"run_name": "other"}) == base  # the name is prefixed, not hashed
    assert _fingerprint(tmp_path, decode={"workers": 7}) == base  # decode workers change no frame
    # How the branch computes (its mixed precision) changes the weights -> a new run.
    assert _fingerprint(tmp_path, train={"amp": "bf16"}) != base
    # New data (a re-decoded frame store) -> a new run.
    (tmp_path / "store.json").write_text(json.dumps({"videos": 11}))
    assert _fingerprint(tmp_path) != base
