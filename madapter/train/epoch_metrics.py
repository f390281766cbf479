"""Each epoch's metrics in MLflow exactly once, even when workers are lost and epochs trained again.

A worker that logs its epoch before Ray has registered that epoch's checkpoint can log it twice:
if its node goes away in between, Ray restarts the group from the previous checkpoint and the
epoch is trained, and logged, again.  Ray registers a reported checkpoint on the Train controller
a poll later (up to ``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``: 0.25 s in madapter's runs,
:data:`madapter.train.driver.RAY_TRAIN_DEFAULTS`; 2 s by Ray's default) than the worker wrote it, so
that window is not empty.  The log therefore lives where the registration happens:
:class:`EpochMetrics` is a Ray Train ``UserCallback``, run on the controller right AFTER its
checkpoint manager has registered the epoch's checkpoint and saved its snapshot (Ray calls the
checkpoint manager first).  Whatever Ray restores from has been logged, and nothing newer has.

The one window left is the controller (or its node, the driver's) dying between the snapshot and
the log; the epoch is then missing, never doubled, and :func:`log_missing_epochs` fills it in from
the checkpoint's history when the run finishes.
"""

from __future__ import annotations

import logging
from typing import Any

from ray.train import UserCallback

logger = logging.getLogger(__name__)

MARKER_KEY = "epoch_time_s"
"""A metric every epoch logs (always finite), by which :func:`log_missing_epochs` sees which are there."""


def epoch_values(record: dict[str, Any]) -> dict[str, float]:
    """The metrics of a history record: everything but ``epoch``, which is the step."""
    return {k: float(v) for k, v in record.items() if k != "epoch"}


class EpochMetrics(UserCallback):
    """On the Ray Train controller: log each registered epoch's record to the MLflow run at step ``epoch``.

    Picklable (Ray ships it to the controller): the client is made on first use, there.
    """

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self._client = None

    def __getstate__(self) -> dict[str, Any]:
        return {"tracking_uri": self.tracking_uri, "run_id": self.run_id, "_client": None}

    def _mlflow(self):
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(tracking_uri=self.tracking_uri)
        return self._client

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        """Ray has registered this report (and its checkpoint): log rank 0's record, the reduced one."""
        if not metrics or "epoch" not in metrics[0]:
            return
        record = metrics[0]
        try:
            from madapter.tracking import log_metrics

            log_metrics(self._mlflow(), self.run_id, epoch_values(record), step=int(record["epoch"]))
        except Exception as err:  # noqa: BLE001 - an MLflow hiccup must not fail the training run
            logger.warning("MLflow run %s: could not log epoch %s (%s); it is logged when training ends",
                           self.run_id, record["epoch"], err)


def log_missing_epochs(client, run_id: str, history: list[dict[str, Any]]) -> list[int]:
    """Log the epochs of ``history`` (a finished checkpoint's) that the MLflow run lacks; their numbers."""
    from madapter.tracking import log_metrics

    logged = {m.step for m in client.get_metric_history(run_id, MARKER_KEY)}
    missing = [record for record in history if int(record["epoch"]) not in logged]
    for record in missing:
        log_metrics(client, run_id, epoch_values(record), step=int(record["epoch"]))
    if missing:
        logger.warning("MLflow run %s: logged epoch(s) %s from the checkpoint's history (missing from the run)",
                       run_id, [int(r["epoch"]) for r in missing])
    return [int(r["epoch"]) for r in missing]
