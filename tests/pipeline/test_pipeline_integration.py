"""The whole pipeline for real, in a throw-away copy of the repository, with the smallest params.

One Prefect flow run (real Prefect API from the test harness) runs every stage through
``dvc repro --single-item``: real synthetic mp4 files, decord, the features stage on Ray Data, a
Ray Train worker, an MLflow SQLite store and registry (the session's ``finished_pipeline``, which
other modules copy too).  The tests build on that run, in file order, in a copy of their own:

1. the flow completes and publishes its summary artifact;
2. DVC recorded everything (``dvc.lock``, metrics with top-1, data pushed to the local remote)
   and MLflow has the run and a model version with alias ``champion``;
3. a plain ``dvc repro`` afterwards runs no stage (the flow and DVC agree on what is done);
4. ``prefect.yaml`` deploys with its schedules, and a triggered deployment run completes.

That a ``train.*`` edit re-runs train and what follows from the features on disk, and nothing
before, is checked where such an edit runs anyway: the interrupted ``make demo`` of
tests/pipeline/test_interrupt.py, whose longer training is that edit.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_URL

from madapter.stages import STAGE_NAMES
from pipelines.flows import ARTIFACT_KEY
from tests.common.processes import clean_env, run, run_cli
from tests.common.repo import copy_finished, lock_stages, mlflow_client

pytestmark = pytest.mark.integration

DVC = [sys.executable, "-m", "dvc"]


def ran_stages(dvc_output: str) -> list[str]:
    return re.findall(r"Running stage '([^']+)'", dvc_output)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


async def _artifacts(key: str, flow_run_id) -> list:
    """The artifacts ``key`` of one flow run (the session's Prefect server also holds other modules' runs)."""
    async with get_client() as client:
        return await client.read_artifacts(artifact_filter=ArtifactFilter(
            key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id])))


@pytest.fixture(scope="module")
def pipeline(finished_pipeline, tmp_path_factory):
    """A copy of the session's repository after its one full Prefect flow run (these tests re-run
    stages in it), and that flow run's final state."""
    finished, state = finished_pipeline
    return copy_finished(finished, tmp_path_factory.mktemp("pipeline") / "repo"), state


def test_flow_runs_every_stage_and_publishes_summary(pipeline):
    repo, state = pipeline
    assert state.is_completed(), state.message
    runs = state.result()
    assert [r.stage for r in runs] == list(STAGE_NAMES)
    assert all(r.ran for r in runs), "a fresh repository must run every stage"

    import asyncio

    artifacts = asyncio.run(_artifacts(ARTIFACT_KEY, state.state_details.flow_run_id))
    assert artifacts, "the flow must publish its run summary artifact"
    markdown = artifacts[0].data
    top1 = read_json(repo / "outputs/evaluate/metrics.json")["top1"]
    assert f"| top1 | {top1:.4f} |" in markdown
    assert re.search(r"#/experiments/\d+/runs/[0-9a-f]{32}", markdown), "MLflow run link missing"
    assert "alias `champion`" in markdown


def test_the_training_log_has_no_ray_error_line(pipeline):
    """Ray Train's preemption watcher (off in madapter's runs: ``RAY_TRAIN_DEFAULTS``) logged an ERROR
    line from the controller into every training log."""
    repo, _ = pipeline
    log = (repo / "outputs/logs/train.log").read_text()
    assert "Running stage 'train'" in log
    assert "PreemptionWatcher" not in log and not re.search(r"\[[\d-]+ [\d:,]+ E \d+ \d+\]", log), log[-3000:]


def test_dvc_lock_metrics_mlflow_run_and_champion(pipeline):
    repo, _ = pipeline
    assert set(lock_stages(repo)) == set(STAGE_NAMES)

    metrics = read_json(repo / "outputs/evaluate/metrics.json")
    assert 0.0 <= metrics["top1"] <= 1.0 and metrics["dataset"] == "synthetic"
    shown = json.loads(run([*DVC, "metrics", "show", "--json"], repo).stdout)
    assert "top1" in json.dumps(shown)

    client = mlflow_client(repo)
    run_id = read_json(repo / "outputs/train/run.json")["run_id"]
    mlflow_run = client.get_run(run_id)
    assert mlflow_run.info.status == "FINISHED"
    assert "train_loss" in mlflow_run.data.metrics

    registration = read_json(repo / "outputs/register/registration.json")
    champion = client.get_model_version_by_alias(registration["model_name"], "champion")
    assert str(champion.version) == str(registration["version"]) and champion.run_id == run_id

    # the flow pushed the DVC cache to the default (local) remote: a fresh clone could `dvc pull`
    remote_files = [p for p in (repo / ".dvc-remote").rglob("*") if p.is_file()]
    assert len(remote_files) > 6, "dvc push to .dvc-remote did not happen"
    status = run([*DVC, "status", "--cloud"], repo)
    assert "in sync" in status.stdout + status.stderr, status.stdout + status.stderr


def test_dvc_plots_render_curves_and_confusion(pipeline):
    repo, _ = pipeline
    shown = json.loads(run([*DVC, "plots", "show", "--json"], repo).stdout)
    assert "errors" not in shown, shown.get("errors")
    plots = shown["data"]
    for name in ("Loss per epoch", "Accuracy per epoch", "Confusion matrix"):
        values = plots[name][0]["content"]["data"]["values"]
        assert values, f"plot {name!r} has no data"
    assert {"actual", "predicted"} <= set(plots["Confusion matrix"][0]["content"]["data"]["values"][0])


def test_cli_predicts_a_video_with_the_champion(pipeline, tmp_path):
    repo, _ = pipeline
    video = next((repo / "data/raw/synthetic").rglob("*.mp4"))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00not a video" * 64)
    proc = run_cli(
        ["predict", str(video), str(broken), "--model", "models:/madapter@champion", "--top-k", "2"], repo
    )
    assert proc.returncode == 1, "an unreadable video must make the command fail"
    error_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "broken.mp4" in error_lines[0]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["video"] == str(video), "the readable video is still classified"
    classes = (repo / "data/index/synthetic/classes.txt").read_text().split()
    assert [p["label"] in classes for p in result["predictions"]] == [True, True]


def test_second_dvc_repro_runs_no_stage(pipeline):
    repo, _ = pipeline
    proc = run([*DVC, "repro"], repo)
    assert ran_stages(proc.stdout + proc.stderr) == []
    assert "Data and pipelines are up to date" in proc.stdout + proc.stderr


def _wait_for_deployments(names: list[str], timeout: float = 90):
    import asyncio

    async def read_all():
        async with get_client() as client:
            return [await client.read_deployment_by_name(n) for n in names]

    deadline = time.monotonic() + timeout
    while True:
        try:
            return asyncio.run(read_all())
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _delete_deployments(ids: list) -> None:
    import asyncio

    async def delete():
        async with get_client() as client:
            for deployment_id in ids:
                await client.delete_deployment(deployment_id)

    asyncio.run(delete())


def test_deployments_have_schedules_and_triggered_run_completes(pipeline, tmp_path):
    repo, _ = pipeline
    env = {**clean_env(), "PREFECT_API_URL": PREFECT_API_URL.value(), "MADAPTER_REPO": str(repo)}
    prefect = [sys.executable, "-m", "prefect"]

    # prefect.yaml as an operator uses it: a process work pool + `prefect deploy --all`
    for cmd in (
        [*prefect, "work-pool", "create", "madapter-process", "--type", "process"],
        [*prefect, "--no-prompt", "deploy", "--all"],
    ):
        proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    weekly, on_demand = _wait_for_deployments(
        ["madapter-pipeline/weekly-retrain", "madapter-evaluation/on-demand-evaluation"]
    )
    assert weekly.work_pool_name == "madapter-process"
    assert weekly.pull_steps and str(repo) in json.dumps(weekly.pull_steps), "worker must run from the checkout"
    assert [s.schedule.cron for s in weekly.schedules] == ["0 3 * * 1"]
    assert weekly.parameters["force_stages"] == ["download"]
    assert on_demand.schedules == []
    _delete_deployments([weekly.id, on_demand.id])  # an operator switching to `serve` does the same

    # the local serve entry point (same prefect.yaml) serves them and executes a triggered run
    metrics_before = (repo / "outputs/evaluate/metrics.json").stat().st_mtime_ns
    serve_log = tmp_path / "serve.log"
    with serve_log.open("w") as log:
        serve = subprocess.Popen(
            [sys.executable, "-m", "pipelines.serve", "--limit", "1"],
            cwd=repo,
            env={**env, "PREFECT_RUNNER_POLL_FREQUENCY": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            weekly, _ = _wait_for_deployments(
                ["madapter-pipeline/weekly-retrain", "madapter-evaluation/on-demand-evaluation"]
            )
            assert [s.schedule.cron for s in weekly.schedules] == ["0 3 * * 1"]
            flow_run = run_deployment(
                "madapter-evaluation/on-demand-evaluation",
                parameters={"repo_dir": str(repo)},
                timeout=300,
                poll_interval=0.5,
                as_subflow=False,
            )
        finally:
            serve.terminate()
            try:
                serve.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(serve.pid, 9)
    assert flow_run.state.is_completed(), f"{flow_run.state}\n{serve_log.read_text()[-4000:]}"
    assert (repo / "outputs/evaluate/metrics.json").stat().st_mtime_ns > metrics_before, "evaluate did not re-run"
