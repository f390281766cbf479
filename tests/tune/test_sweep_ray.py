"""A real 4-trial ASHA sweep on CPU, through the CLI, interrupted and resumed, logging to a real
``mlflow server``; its best preset goes through ``check-params`` and ``preset-args``.

The sweep is interrupted (SIGINT, as Ctrl-C) as soon as its second trial starts, then run again
(it resumes), then once more after it finished (nothing is trained again).  One trial at a time
(``tune.max_concurrent_trials: 1``) with a seeded sampler: the trials come in a fixed order with
fixed configurations.  How far the second trial got before the interruption varies (Tune lets
running trials go on for a few seconds while it stops), and with it which rungs it records after
resuming (ASHA's records are not part of Tune's saved state); but the last trial draws a learning
rate (0.055) whose first-epoch loss is several times every other trial's, so ASHA stops it at the
first rung whatever the second trial recorded.
"""

from __future__ import annotations

import json
import logging
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from tests.common.fixtures import local_ray
from tests.common.processes import REPO, cli_env, run_cli
from tests.tune.conftest import SPACE, write_sweep_params

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

MAX_EPOCHS = 3


def _children(client: MlflowClient, parent: str) -> list:
    experiment = client.get_run(parent).info.experiment_id
    return client.search_runs([experiment], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'",
                              max_results=100)


def _interrupt_after_first_trial(params: Path, sweep_dir: Path, ray_address: str) -> subprocess.CompletedProcess:
    """Start the sweep; Ctrl-C it once Tune starts trial 2 (trial 1 has ended: one trial at a time)."""
    cmd = [sys.executable, "-m", "madapter", "tune", "--params", str(params)]
    proc = subprocess.Popen(cmd, cwd=params.parent, env=cli_env(ray_address), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while not any(sweep_dir.glob("*_00001")):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the sweep ended before its second trial started:\n{proc.communicate()[0][-4000:]}")
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, "")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory, data_dir: Path, mlflow_server: str):
    """The sweep run three times: interrupted, resumed to the end, and again once finished; the
    ``python -m madapter tune`` runs join the session's local Ray through ``RAY_ADDRESS``."""
    ray_address = local_ray()
    root = tmp_path_factory.mktemp("sweep")
    params = write_sweep_params(root, data_dir, mlflow_server)
    sweep_dir = root / "tune" / "sweep"
    client = MlflowClient(mlflow_server)
    started = time.perf_counter()
    first = _interrupt_after_first_trial(params, sweep_dir, ray_address)
    parent = json.loads((sweep_dir / "sweep.json").read_text())["parent_run_id"]
    after_first = {r.info.run_id: r for r in _children(client, parent)}
    parent_after_first = client.get_run(parent)
    interrupted = time.perf_counter()
    second = run_cli(["tune", "--params", str(params)], root, timeout=600, ray_address=ray_address)
    resumed = time.perf_counter()
    after_second = {r.info.run_id: r for r in _children(client, parent)}
    third = run_cli(["tune", "--params", str(params)], root, timeout=300, ray_address=ray_address)
    log.info("sweep: interrupted run %.0fs, resumed run %.0fs, finished-sweep run %.0fs",
             interrupted - started, resumed - interrupted, time.perf_counter() - resumed)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    return {"root": root, "params": params, "client": client, "parent": parent, "first": first,
            "second": second, "third": third, "after_first": after_first, "parent_after_first": parent_after_first,
            "after_second": after_second, "after_third": {r.info.run_id: r for r in _children(client, parent)}}


def test_interrupted_sweep_exits_130_and_keeps_its_finished_trial(sweep) -> None:
    first = sweep["first"]
    assert first.returncode == 130, first.stdout[-3000:]
    assert "run the same command again to resume sweep 'sweep'" in first.stdout
    assert sweep["parent_after_first"].info.status == "KILLED"
    finished = [r for r in sweep["after_first"].values() if r.info.status == "FINISHED"]
    assert [r.data.tags["madapter.trial_id"].endswith("_00000") for r in finished] == [True]


def test_resumed_sweep_has_one_parent_and_a_child_per_trial(sweep) -> None:
    client, parent = sweep["client"], sweep["parent"]
    children = list(sweep["after_second"].values())
    current = [r for r in children if r.data.tags["madapter.trial_outcome"] != "superseded"]
    assert len({r.data.tags["madapter.trial_id"] for r in current}) == 4 == len(current)
    kept = {r.info.run_id for r in current}
    for stale in (r for r in children if r.info.run_id not in kept):  # a trial restarted before its first checkpoint
        assert stale.info.status == "KILLED" and "superseded by run" in stale.data.tags["madapter.stop_reason"]
    assert {r.data.tags["mlflow.runName"] for r in current} == {f"sweep-{r.data.tags['madapter.trial_id']}" for r in current}
    # the trial finished before the interruption was not trained again: same run, 3 epochs logged once
    (done_before,) = [r for r in sweep["after_first"].values() if r.info.status == "FINISHED"]
    assert sweep["after_second"][done_before.info.run_id].info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(done_before.info.run_id, "train_loss")] == [1, 2, 3]
    assert client.get_run(parent).info.status == "FINISHED"


def test_asha_stopped_a_trial_early_and_its_run_says_so(sweep) -> None:
    client, parent = sweep["client"], sweep["parent"]
    outcomes = {}
    for run in sweep["after_second"].values():
        if run.data.tags["madapter.trial_outcome"] == "superseded":
            continue  # a run left by its trial's restart before its first checkpoint
        epochs = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
        outcome = run.data.tags["madapter.trial_outcome"]
        outcomes[run.data.tags["madapter.trial_id"]] = outcome
        if outcome == "completed":  # an epoch in flight at the interruption is trained (and logged) again
            assert run.info.status == "FINISHED" and sorted(set(epochs)) == [1, 2, 3]
        else:  # stopped at a rung (the worker may log the epoch it was in while its run is aborted)
            assert outcome == "stopped_early" and run.info.status == "KILLED", run.data.tags
            reason = run.data.tags["madapter.stop_reason"]
            assert reason.startswith("tune: ASHA stopped the trial after epoch ")
            assert int(reason.split("after epoch ")[1].split()[0]) < MAX_EPOCHS and epochs[0] == 1
    log.info("trial outcomes: %s", outcomes)
    assert [outcome for trial, outcome in outcomes.items() if trial.endswith("_00003")] == ["stopped_early"]
    top = client.get_run(parent).data
    assert top.metrics["trials_stopped_early"] == list(outcomes.values()).count("stopped_early")
    assert {k: top.params[k] for k in ("tune.scheduler", "tune.grace_period", "tune.reduction_factor",
                                       "tune.max_epochs", "tune.metric", "tune.time_attr")} == {
        "tune.scheduler": "ASHA", "tune.grace_period": "1", "tune.reduction_factor": "2.0",
        "tune.max_epochs": str(MAX_EPOCHS), "tune.metric": "train_loss", "tune.time_attr": "epoch"}
    assert top.params["search.train.lr"] == "loguniform(1e-05, 0.1)"


def test_parent_holds_the_best_configuration_and_the_preset_has_only_searched_keys(sweep) -> None:
    client, parent = sweep["client"], sweep["parent"]
    top = client.get_run(parent).data
    preset_file = sweep["root"] / "best.yaml"
    text = preset_file.read_text()
    assert text.startswith("# Best configuration of the Ray Tune sweep 'sweep'") and top.tags["best.trial_id"] in text
    preset = yaml.safe_load(text)
    assert set(preset) == {"model", "train"} and set(preset["train"]) == {"lr"}  # weight_decay was not searched
    assert set(preset["model"]) == {"width", "levels", "temporal", "fusion"}
    for section, values in preset.items():
        for key, value in values.items():
            assert top.tags[f"best.{section}.{key}"] == (json.dumps(value) if isinstance(value, list) else str(value))
    best = client.get_run(top.tags["best.run_id"])
    assert best.data.tags["mlflow.parentRunId"] == parent
    assert float(best.data.params["train.lr"]) == preset["train"]["lr"]
    at_epoch = {m.step: m.value for m in client.get_metric_history(best.info.run_id, "train_loss")}
    assert top.metrics["best_train_loss"] == pytest.approx(at_epoch[int(top.tags["best.epoch"])])
    finals = [r.data.metrics["train_loss"] for r in sweep["after_second"].values()
              if r.data.tags.get("madapter.trial_outcome") == "completed"]
    assert top.metrics["best_train_loss"] <= min(finals) + 1e-9
    assert "best.yaml" in [a.path.split("/")[-1] for a in client.list_artifacts(parent, "tune")]
    assert preset["model"]["levels"] in SPACE["levels"]


def test_the_preset_is_accepted_by_check_params_and_preset_args(sweep, tmp_path: Path) -> None:
    preset = sweep["root"] / "best.yaml"
    checked = run_cli(["check-params", "--params", str(REPO / "params.yaml"), "--preset", str(preset)], tmp_path)
    assert checked.returncode == 0 and "OK" in checked.stdout, checked.stderr
    args = run_cli(["preset-args", str(preset), "--params", str(REPO / "params.yaml")], tmp_path)
    assert args.returncode == 0, args.stderr
    keys = {arg.removeprefix("--set-param=").split("=")[0] for arg in shlex.split(args.stdout)}
    assert keys == {"train.lr", "model.width", "model.levels", "model.temporal", "model.fusion"}


def test_running_a_finished_sweep_again_trains_nothing(sweep) -> None:
    third = sweep["third"]
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    assert set(sweep["after_third"]) == set(sweep["after_second"])
    for run_id, run in sweep["after_third"].items():
        assert run.info.end_time == sweep["after_second"][run_id].info.end_time
    best_line = [line for line in sweep["second"].stdout.splitlines() if line.startswith("best:")]
    assert best_line and best_line == [line for line in third.stdout.splitlines() if line.startswith("best:")]
