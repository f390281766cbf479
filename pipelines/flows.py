"""Prefect flows for the madapter pipeline: one task per stage of ``dvc.yaml``, then a run summary.

``madapter_pipeline`` chains the stages of :data:`madapter.stages.STAGE_NAMES` (download -> index
-> scan -> decode -> features -> train -> evaluate -> register) and can ``dvc push`` the results;
``madapter_evaluation`` re-runs evaluation (and optionally registration) on demand.  The flows are
thin on purpose: DVC decides what is out of date and records it in ``dvc.lock``, the library
functions do the work, Prefect adds scheduling, retries, failure states, logs and a run-summary
artifact.

Configuration is validated first, in-process, so a bad ``params.yaml`` fails the flow before
any stage starts, with the one-line message from :mod:`madapter.config`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from madapter.config import Params, demo_only_settings, load_params
from madapter.stages import STAGE_NAMES
from pipelines.dvc_stages import REPO_ROOT, StageRun, dvc_push, run_dvc_stage
from pipelines.summary import collect_summary, to_markdown

logger = logging.getLogger(__name__)

ARTIFACT_KEY = "madapter-run-summary"
"""Prefect artifact key: every run adds a version under this key (Artifacts tab, latest first)."""

# DVC, not Prefect, decides what is up to date: Prefect's result cache is switched off for every task.


@task(name="validate-params", cache_policy=NO_CACHE)
def validate_params(repo: str) -> Params:
    """Load and validate ``<repo>/params.yaml``; a ConfigError fails the flow before any stage.  A real
    dataset run with params.yaml's demo-only settings gets the warnings ``check-params`` prints."""
    params = load_params(Path(repo) / "params.yaml")
    log = get_run_logger()
    log.info(
        "params OK: dataset=%s backbone=%s tuning=%s epochs=%d workers=%d",
        params.dataset.name,
        params.model.backbone,
        params.model.tuning,
        params.train.epochs,
        params.train.num_workers,
    )
    for line in demo_only_settings(params):
        log.warning(line)
    return params


@task(name="dvc-stage", task_run_name="dvc-{stage}", cache_policy=NO_CACHE)
def dvc_stage(stage: str, repo: str, force: bool = False) -> StageRun:
    """Run one DVC stage; Prefect marks the task Failed with DVC's error line when it fails.

    The terminal gets the stage's few chosen lines (:mod:`pipelines.console`); the task run's logs
    in the Prefect UI get every line, like ``outputs/logs/<stage>.log``.
    """
    run_logger = get_run_logger()
    return run_dvc_stage(stage, Path(repo), force=force, log=run_logger, full_log=api_only(run_logger))


API_ONLY_LOGGER = "prefect.task_runs.stage_output"
"""The logger of the stage output lines that go to the Prefect API only (not to the terminal)."""


def api_only(run_logger: logging.Logger | logging.LoggerAdapter) -> logging.LoggerAdapter:
    """A logger for this task run whose records reach the Prefect API (the UI's task run logs) only.

    ``get_run_logger()`` writes to the API (``APILogHandler`` on ``prefect.task_runs``) and, by
    propagation, to the terminal (``PrefectConsoleHandler`` on the root logger).  This logger
    carries the run logger's context (flow and task run ids, which ``APILogHandler`` reads from
    the record) to an ``APILogHandler`` of its own and does not propagate.
    """
    from prefect.logging.handlers import APILogHandler
    from prefect.logging.loggers import PrefectLogAdapter

    api_logger = logging.getLogger(API_ONLY_LOGGER)
    if not any(isinstance(handler, APILogHandler) for handler in api_logger.handlers):
        api_logger.addHandler(APILogHandler())
        api_logger.setLevel(logging.INFO)
        api_logger.propagate = False
    extra = dict(getattr(run_logger, "extra", None) or {})
    return PrefectLogAdapter(api_logger, extra=extra)


@task(name="dvc-push", retries=2, retry_delay_seconds=10, cache_policy=NO_CACHE)
def push_data(repo: str) -> None:
    """Push the DVC cache (raw data, index, frames, checkpoint, metrics) to the default remote."""
    dvc_push(Path(repo), log=get_run_logger())


@task(name="publish-summary", cache_policy=NO_CACHE)
def publish_summary(params: Params, repo: str, runs: list[StageRun]) -> str:
    """Create the Prefect markdown artifact (:func:`pipelines.summary.to_markdown`: stages, metrics,
    per-class accuracy, MLflow run link, registry alias)."""
    summary = collect_summary(params, Path(repo), [(r.stage, r.ran, r.seconds) for r in runs])
    markdown = to_markdown(summary)
    create_markdown_artifact(
        key=ARTIFACT_KEY,
        markdown=markdown,
        description=f"madapter run: {params.dataset.name} / {params.model.backbone} ({params.model.tuning})",
    )
    get_run_logger().info("summary artifact %r published", ARTIFACT_KEY)
    return markdown


def _stage_task(stage: str, download_retries: int, download_retry_delay_s: float):
    """Download talks to the network: Prefect retries the whole (resumable) stage on failure,
    waiting 1x, 4x, 10x ``download_retry_delay_s`` (a mirror that is down often comes back)."""
    if stage == "download" and download_retries > 0:
        delays = [download_retry_delay_s * f for f in (1, 4, 10)]
        return dvc_stage.with_options(retries=download_retries, retry_delay_seconds=delays[:download_retries])
    return dvc_stage


@flow(name="madapter-pipeline", log_prints=False, validate_parameters=True)
def madapter_pipeline(
    repo_dir: str = str(REPO_ROOT),
    force_stages: list[str] | None = None,
    download_retries: int = 2,
    download_retry_delay_s: float = 30.0,
    push: bool = False,
) -> list[StageRun]:
    """The whole pipeline, one DVC stage per task, in dependency order.

    Args:
        repo_dir: the checkout holding ``dvc.yaml`` and ``params.yaml`` (default: this code's repo).
        force_stages: stages to re-run even when DVC finds them up to date (e.g. ``["download"]`` to
            re-check the source on a schedule; everything downstream re-runs only if its inputs changed).
        download_retries: Prefect retries of the download stage (on top of per-file HTTP retries).
        download_retry_delay_s: first wait before a download retry (then 4x, 10x).
        push: ``dvc push`` the outputs to the default DVC remote after a successful run.
    """
    forced = set(force_stages or [])
    unknown = forced - set(STAGE_NAMES)
    if unknown:
        raise ValueError(f"force_stages: unknown stage(s) {sorted(unknown)}; expected {list(STAGE_NAMES)}")
    params = validate_params(repo_dir)
    runs: list[StageRun] = []
    for stage in STAGE_NAMES:
        task_fn = _stage_task(stage, download_retries, download_retry_delay_s)
        runs.append(task_fn(stage, repo_dir, force=stage in forced))
    if push:
        push_data(repo_dir)
    publish_summary(params, repo_dir, runs)
    return runs


@flow(name="madapter-evaluation", validate_parameters=True)
def madapter_evaluation(repo_dir: str = str(REPO_ROOT), also_register: bool = False) -> list[StageRun]:
    """Re-evaluate the current checkpoint on demand (forced), optionally re-running registration.

    Useful after changing ``evaluate.*`` (views, split) or to re-check a model: DVC records the
    new metrics in ``dvc.lock`` like any other run.  (``also_register``, not ``register``: Prefect
    validates parameters with a pydantic model, whose own ``register`` attribute a field of that
    name would shadow, with a warning at every import.)
    """
    params = validate_params(repo_dir)
    runs = [dvc_stage("evaluate", repo_dir, force=True)]
    if also_register:
        runs.append(dvc_stage("register", repo_dir, force=True))
    publish_summary(params, repo_dir, runs)
    return runs


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    madapter_pipeline()
