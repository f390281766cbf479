"""Is a training run complete?  One answer for the MLflow UI, ``run.json`` and the registry.

A training run can end three ways: it trained every epoch (MLflow status ``FINISHED``), it was
stopped by the ``train.max_epochs_per_run`` budget and will be resumed from its Ray checkpoint
by the next ``train`` (``KILLED``), or it failed (``FAILED``).  Only the first may be promoted
to ``champion``.  The status alone does not say *why* a run is not finished, so the driver also
tags the run (:data:`STOP_REASON_TAG`, :data:`COMPLETED_TAG`, :data:`EPOCHS_DONE_TAG`); the
registry reads status, tags and ``outputs/train/run.json`` through :func:`incomplete_reason`.
"""

from __future__ import annotations

import logging
from typing import Any

from madapter.errors import first_line

logger = logging.getLogger(__name__)

STOP_REASON_TAG = "madapter.stop_reason"
"""Why the run ended: ``completed: ...``, ``max_epochs_per_run: ...`` or ``failed: ...``."""
COMPLETED_TAG = "madapter.completed"
EPOCHS_DONE_TAG = "madapter.epochs_done"
FINISHED, KILLED, FAILED = "FINISHED", "KILLED", "FAILED"
_MAX_REASON = 500  # MLflow tag values are capped (8000 chars); keep the UI column readable


def budget_reason(epochs_done: int, epochs: int, max_epochs_per_run: int | None) -> str:
    """The stop reason of a run cut short by ``train.max_epochs_per_run`` (what to do next included)."""
    return (
        f"max_epochs_per_run: stopped after epoch {epochs_done}/{epochs} "
        f"(train.max_epochs_per_run={max_epochs_per_run}); run train again to resume"
    )


def record_training_outcome(
    client, run_id: str, epochs_done: int, epochs: int, max_epochs_per_run: int | None
) -> bool:
    """Tag the run with how far it got, then set its final status; returns whether it completed.

    Tags go first and the status last, so a run is never ``FINISHED`` without its tags.  A
    resumed run that completes overwrites the stop reason of the run it continued.
    """
    completed = epochs_done >= epochs
    reason = f"completed: {epochs_done}/{epochs} epochs" if completed else budget_reason(
        epochs_done, epochs, max_epochs_per_run
    )
    client.set_tag(run_id, EPOCHS_DONE_TAG, str(epochs_done))
    client.set_tag(run_id, COMPLETED_TAG, str(completed).lower())
    client.set_tag(run_id, STOP_REASON_TAG, reason)
    client.set_terminated(run_id, status=FINISHED if completed else KILLED)
    return completed


def record_training_failure(client, run_id: str, error: BaseException | str) -> None:
    """Mark the run ``FAILED`` with the error's first line as its stop reason (best effort).

    Called while an exception is already propagating: a tracking server that is down too must
    not replace the training error with its own, so MLflow errors are only logged.
    """
    line = error if isinstance(error, str) else f"{type(error).__name__}: {first_line(error)}"
    line = line.strip().splitlines()[0] if line.strip() else line
    try:
        client.set_tag(run_id, COMPLETED_TAG, "false")
        client.set_tag(run_id, STOP_REASON_TAG, f"failed: {line}"[:_MAX_REASON])
        client.set_terminated(run_id, status=FAILED)
    except Exception:  # noqa: BLE001 - keep the original training error visible
        logger.exception("could not mark MLflow run %s as FAILED", run_id)


def record_training_interrupt(client, run_id: str) -> None:
    """Mark a run interrupted by the user (Ctrl-C) ``KILLED``: resumable from its last checkpoint."""
    try:
        client.set_tag(run_id, COMPLETED_TAG, "false")
        client.set_tag(run_id, STOP_REASON_TAG, "interrupted by the user; run train again to resume")
        client.set_terminated(run_id, status=KILLED)
    except Exception:  # noqa: BLE001 - the interrupt must still propagate promptly
        logger.exception("could not mark MLflow run %s as KILLED", run_id)


def incomplete_reason(run_json: dict[str, Any], status: str, tags: dict[str, str]) -> str | None:
    """Why the model of this run must not become ``champion``; ``None`` if the run is complete.

    Complete means both: ``run.json`` says ``completed: true`` (all ``train.epochs`` trained) and
    the MLflow run is ``FINISHED``.  A missing ``completed`` key counts as incomplete: a model of
    unknown provenance is not promoted.
    """
    reason = tags.get(STOP_REASON_TAG)
    if run_json.get("completed") is not True:
        done, total = run_json.get("epochs_done"), run_json.get("epochs")
        got = f"{done}/{total} epochs" if done is not None and total is not None else "an unknown number of epochs"
        detail = reason if reason and not reason.startswith("completed") else f"training stopped after {got}"
        return f"incomplete training run (MLflow status {status}): {detail}"
    if status != FINISHED:
        detail = f": {reason}" if reason and not reason.startswith("completed") else ""
        return f"training run is {status}, not FINISHED{detail}"
    return None
