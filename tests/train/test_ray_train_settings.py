"""The Ray Train settings madapter's runs use (:data:`madapter.train.driver.RAY_TRAIN_DEFAULTS`) reach
Ray, and a user's own setting of the same variable wins.

Why it matters: at Ray's default 2 s controller poll every short epoch waited for the poll that
collects its report (the demo's epochs took 2 s each), and Ray's preemption watcher printed an ERROR
line into every training log.  Ray reads both from the environment of the process that calls
``fit()``; a renamed variable in a Ray upgrade would silently bring both back.
"""

from __future__ import annotations

import os

import pytest

from madapter.train import driver
from madapter.train.driver import CONTROLLER_POLL_ENV, PREEMPTION_WATCHER_ENV, RAY_TRAIN_DEFAULTS


class _RecordingTrainer:
    """Stands in for ``TorchTrainer`` in ``_fit``: records the environment ``fit()`` sees."""

    checkpoint = object()

    def fit(self):
        self.seen = {name: os.environ.get(name) for name in RAY_TRAIN_DEFAULTS}
        return self


def test_ray_propagates_every_variable_madapter_sets() -> None:
    from ray.train.v2._internal.constants import ENV_VARS_TO_PROPAGATE

    assert set(RAY_TRAIN_DEFAULTS) <= ENV_VARS_TO_PROPAGATE, "a Ray upgrade renamed a Ray Train variable"


def test_fit_sees_the_defaults_and_a_users_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PREEMPTION_WATCHER_ENV, raising=False)
    monkeypatch.setenv(CONTROLLER_POLL_ENV, "2")  # the user's choice (a large cluster)
    trainer = driver._fit(_RecordingTrainer(), client=None, run_id="r", run_dir="d")
    assert trainer.seen == {CONTROLLER_POLL_ENV: "2", PREEMPTION_WATCHER_ENV: "0"}

    monkeypatch.delenv(CONTROLLER_POLL_ENV)
    trainer = driver._fit(_RecordingTrainer(), client=None, run_id="r", run_dir="d")
    assert trainer.seen[CONTROLLER_POLL_ENV] == "0.25"
