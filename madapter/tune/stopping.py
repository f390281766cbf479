"""Stopping a trial early without leaking its Ray Train workers' CPUs.

ASHA stops a trial by ending its Tune actor.  The Ray Train controller that actor started dies
with it, before it can release the placement group that reserves its workers' CPUs.  Ray Train's
safety net for a dead controller (its detached ``PlacementGroupCleaner``) asks the Ray State API
whether the controller is alive, and the dashboard-less local Ray we start
(:mod:`madapter.ray_runtime`) does not serve that API: the reservation would stay until the sweep
ends, and the next trials would wait for CPUs that never come back (seen: a 4-trial sweep on 2
CPUs hung on its last trial).

So the sweep aborts the Train run itself, the way Ctrl-C does (``TrainController.abort``: the
workers stop and the placement group is removed), the moment ASHA decides, before Tune ends the
trial's actor:

* :class:`RegisterController` (a Ray Train callback, run in each trial's controller) hands the
  controller's handle to the sweep's :class:`Registry` with the trial's first report;
* :class:`AbortStoppedTrials` (a Tune callback, run in the sweep driver) sees ASHA's STOP
  decision (a result marked ``done`` before ``tune.max_epochs``) and aborts that controller.

The registry is a named actor looked up by name, because Tune stores its callbacks with the
experiment and restores them on resume, when the previous invocation's actors are gone.
"""

from __future__ import annotations

import logging
from typing import Any

import ray
from ray.train import UserCallback
from ray.tune import Callback

logger = logging.getLogger(__name__)


NAMESPACE = "madapter-tune"


def registry_name(sweep: str) -> str:
    return f"registry-{sweep}"


def _registry(sweep: str):
    return ray.get_actor(registry_name(sweep), namespace=NAMESPACE)


class Registry:
    """Trial id -> its Ray Train controller, and which trials the sweep stopped (a 0-CPU actor)."""

    def __init__(self) -> None:
        self._controllers: dict[str, Any] = {}
        self._stopped: set[str] = set()

    def register(self, trial_id: str, controller: list) -> None:
        self._controllers[trial_id] = controller[0]  # in a list: passed as a handle, not resolved

    def abort(self, trial_id: str) -> bool:
        """Abort the trial's Train run (workers stopped, placement group removed); ``False`` if unknown."""
        controller = self._controllers.pop(trial_id, None)
        self._stopped.add(trial_id)
        if controller is None:
            return False
        try:
            ray.get(controller.abort.remote(), timeout=120)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            pass  # abort ends the controller's process: its own call may report that
        return True

    def was_stopped(self, trial_id: str) -> bool:
        return trial_id in self._stopped


def start_registry(sweep: str):
    """The sweep's registry, for one invocation: the caller keeps the handle while the sweep runs
    (a named actor without a live handle is garbage-collected)."""
    options = {"name": registry_name(sweep), "namespace": NAMESPACE, "get_if_exists": True}
    return ray.remote(num_cpus=0)(Registry).options(**options).remote()


def stopped_by_sweep(sweep: str, trial_id: str) -> bool:
    """Whether the sweep aborted this trial's Train run (so its failure is ASHA's stop, not an error)."""
    try:
        return bool(ray.get(_registry(sweep).was_stopped.remote(trial_id), timeout=30))
    except (ValueError, ray.exceptions.RayError):
        return False


class RegisterController(UserCallback):
    """Ray Train callback: with the run's first report, register its controller for the trial."""

    def __init__(self, sweep: str, trial_id: str) -> None:
        self._sweep, self._trial_id, self._done = sweep, trial_id, False

    def after_report(self, run_context, metrics, checkpoint) -> None:
        if self._done:
            return
        self._done = True
        try:
            handle = ray.get_runtime_context().current_actor  # runs in the controller: its own handle
            ray.get(_registry(self._sweep).register.remote(self._trial_id, [handle]), timeout=30)
        except (ValueError, ray.exceptions.RayError) as err:  # never fail the training run over this
            logger.warning("trial %s: could not register its Ray Train run with the sweep (%s); if ASHA "
                           "stops it, its workers' CPUs stay reserved until the sweep ends", self._trial_id, err)


class AbortStoppedTrials(Callback):
    """Tune callback: when ASHA stops a trial, abort its Train run before Tune ends the trial's actor."""

    def __init__(self, sweep: str, max_epochs: int) -> None:
        self._sweep, self._max_epochs = sweep, max_epochs

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if not result.get("done") or int(result.get("epoch") or 0) >= self._max_epochs:
            return
        try:
            aborted = ray.get(_registry(self._sweep).abort.remote(trial.trial_id), timeout=180)
        except (ValueError, ray.exceptions.RayError) as err:
            logger.warning("trial %s: could not abort its Ray Train run (%s)", trial.trial_id, err)
            return
        if aborted:
            logger.info("trial %s: stopped by ASHA after epoch %s; its Ray Train run is aborted",
                        trial.trial_id, result.get("epoch"))
