"""The sweep directory's own record, ``<tune.storage_path>/<tune.name>/sweep.json``: how a sweep resumes.

Tune restores its trials from the same directory (``Tuner.restore``); this file adds what Tune
does not know: the MLflow parent run to keep logging into, the tracking URI it lives in, and a
digest of what the sweep was asked to do.  Starting a sweep of the same name with a different
search (space, scheduler, trial count, base recipe) would silently continue the old one (Tune
restores its own stored settings), so that is refused with one line instead.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from madapter.config import ConfigError, Params
from madapter.fileio import write_json_atomic

STATE_FILE = "sweep.json"

RUN_CONTROL = frozenset({"storage_path", "output", "max_concurrent_trials"})
"""``tune`` keys that say where or how fast a sweep runs, not what it searches: changing them resumes."""
PINNED_TRAIN = frozenset({"epochs", "num_workers", "max_epochs_per_run", "run_name", "storage_path"})
"""``train`` keys every trial overrides (:func:`madapter.tune.trial.trial_params`): their base value is unused."""


@dataclass
class SweepState:
    name: str
    parent_run_id: str
    tracking_uri: str
    spec_digest: str


def spec_digest(params: Params) -> str:
    """Short hash of what a sweep searches and starts from (not where it runs or writes)."""
    from madapter.train.identity import RUN_CONTROL_KEYS
    from madapter.tune.space import SEARCHED, describe_space

    searched = set(describe_space(params.tune.space))
    train = {k: v for k, v in params.train.model_dump(mode="json").items()
             if k not in RUN_CONTROL_KEYS | PINNED_TRAIN and f"train.{k}" not in searched}
    model = {k: v for k, v in params.model.model_dump(mode="json").items() if f"model.{k}" not in searched}
    spec: dict[str, Any] = {
        "tune": params.tune.model_dump(mode="json", exclude=set(RUN_CONTROL)),
        "seed": params.base.seed,
        "dataset": params.dataset.model_dump(mode="json"),
        "decode": params.decode.model_dump(mode="json", exclude={"workers"}),
        "model": model,
        "train": train,
        "searched": sorted(SEARCHED[f] for f in SEARCHED if getattr(params.tune.space, f)),
    }
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:12]


def read_state(sweep_dir: Path) -> SweepState | None:
    """The record of an earlier start of this sweep, or ``None`` for a new sweep."""
    path = sweep_dir / STATE_FILE
    if not path.is_file():
        return None
    return SweepState(**json.loads(path.read_text()))


def write_state(sweep_dir: Path, state: SweepState) -> None:
    write_json_atomic(sweep_dir / STATE_FILE, asdict(state))


def check_resumable(state: SweepState, params: Params, tracking_uri: str, sweep_dir: Path) -> None:
    """A sweep resumes only with the same search and the same MLflow store; one line otherwise."""
    start_over = f"choose another tune.name, or delete {sweep_dir} to start over"
    if state.spec_digest != spec_digest(params):
        raise ConfigError(f"{sweep_dir}: sweep '{state.name}' was started with other tune/model/train settings "
                          f"(the search cannot change while it resumes); restore them, or {start_over}")
    if state.tracking_uri != tracking_uri:
        raise ConfigError(f"{sweep_dir}: sweep '{state.name}' logs to MLflow at {state.tracking_uri}, not "
                          f"{tracking_uri}; set mlflow.tracking_uri back, or {start_over}")
