"""Ctrl-C during training ends ``make demo`` and every process it started, and says where to resume.

The demo runs for real (``python -m pipelines.demo`` in a copy of the session's finished repository
with a longer training: its own Prefect API server, DVC stages, Ray Train, MLflow) in a new session,
like a terminal's foreground job.  Once Ray has committed an epoch checkpoint, SIGINT goes to the demo's process group, as a
terminal sends it.  Then:

1. every process of the session, and every descendant of the demo in another process group (the
   Prefect server, the DVC stage, Ray's raylet and workers), is gone within 30 s;
2. the demo printed one line saying where to resume and exited with 130;
3. running the demo again completes, resuming training from that checkpoint (same MLflow run,
   Ray's worker resumes after the epoch the line named);
4. the edit of ``train`` params that made the run longer re-ran train -> evaluate -> register only:
   every stage before train was checked and skipped, the features on disk were neither re-extracted
   nor rewritten, and training is a new MLflow run with the new params (what a user's ``train.*``
   edit does; this scenario is that edit, run through ``make demo``).

Two quick tests cover the parts the end-to-end run cannot force: a stage that ignores SIGINT is
escalated to SIGTERM and SIGKILL, and the line names the checkpoint Ray restores, not the newest.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from madapter.config import load_params
from madapter.stages import STAGE_NAMES
from madapter.train.driver import CONTROLLER_POLL_ENV
from pipelines.console import StageOutput
from pipelines.demo import resume_hint
from pipelines.dvc_stages import stop_stage
from tests.common.processes import REPO, clean_env
from tests.common.repo import copy_finished, lock_stages, mlflow_client, write_params

pytestmark = pytest.mark.integration

EPOCHS = 10
"""Tiny epochs: about 2 s each in the interrupted run (:data:`SLOW_EPOCHS`), a 20 s window for the
interrupt, which is sent as soon as the first checkpoint is committed; under 2 s each in the rerun
that completes them (each one writes and commits a checkpoint of the full model)."""
RUN_NAME = "interrupt-test"
EXIT_WITHIN_S = 30.0
FIRST_CHECKPOINT_TIMEOUT_S = 600.0
RERUN_TIMEOUT_S = 900.0

Proc = tuple[int, int]
"""(pid, start time in clock ticks): a process identity that survives pid reuse."""


def _stat(pid: int) -> tuple[int, int, int, str, int] | None:
    """(ppid, pgid, sid, state, start time) of a live (non-zombie) process, else None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    state, ppid, pgid, sid, start = fields[0], int(fields[1]), int(fields[2]), int(fields[3]), int(fields[19])
    return None if state in ("Z", "X") else (ppid, pgid, sid, state, start)


def _all_processes() -> dict[int, tuple[int, int, int, str, int]]:
    procs = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(int(entry))) is not None:
            procs[int(entry)] = stat
    return procs


def _session_and_descendants(root: int) -> set[Proc]:
    """Live processes of ``root``'s session plus all of ``root``'s descendants (whatever their group)."""
    procs = _all_processes()
    children: dict[int, list[int]] = {}
    for pid, (ppid, *_rest) in procs.items():
        children.setdefault(ppid, []).append(pid)
    found = {pid for pid, stat in procs.items() if stat[2] == root}
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return {(pid, procs[pid][4]) for pid in found if pid in procs}


def _alive(tracked: set[Proc]) -> set[Proc]:
    return {(pid, start) for pid, start in tracked if (stat := _stat(pid)) is not None and stat[4] == start}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def _kill_all(root: int, tracked: set[Proc]) -> None:
    """Test cleanup: nothing this test started may outlive it, even when the code under test hangs."""
    for pid, _ in _alive(tracked | _session_and_descendants(root)):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _demo_env(tmp: Path, **extra: str) -> dict[str, str]:
    """A user's environment, with Prefect's home (its database) in the test's directory."""
    return {
        **clean_env(),
        "PREFECT_HOME": str(tmp / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        **extra,
    }


SLOW_EPOCHS = {CONTROLLER_POLL_ENV: "2"}
"""The interrupted run's epochs at Ray's default controller poll (a user's setting wins over
madapter's 0.25 s): each epoch then takes about 2 s, a wide window for the interrupt to land
between the first committed checkpoint and the end of training, on a quiet or a busy machine."""


def _ray_snapshot(repo: Path) -> Path | None:
    found = sorted((repo / "outputs" / "ray").glob(f"{RUN_NAME}-*/checkpoint_manager_snapshot.json"))
    return found[0] if found else None


def _wait_for_committed_checkpoint(demo: subprocess.Popen, repo: Path, log: Path) -> None:
    deadline = time.monotonic() + FIRST_CHECKPOINT_TIMEOUT_S
    while _ray_snapshot(repo) is None:
        if demo.poll() is not None:
            pytest.fail(
                f"the demo ended (exit {demo.returncode}) before training checkpointed:\n{log.read_text()[-4000:]}"
            )
        if time.monotonic() > deadline:
            pytest.fail(
                f"no Ray checkpoint within {FIRST_CHECKPOINT_TIMEOUT_S:.0f}s:\n{log.read_text()[-4000:]}"
            )
        time.sleep(0.2)


@pytest.fixture(scope="module")
def interrupted(finished_pipeline, tmp_path_factory):
    """A copy of the session's finished repository, its training made longer (so train, evaluate and
    register are out of date, the stages before them are not), whose demo was interrupted by SIGINT
    during training; and what that left behind."""
    tmp = tmp_path_factory.mktemp("interrupt")
    repo = copy_finished(finished_pipeline[0], tmp / "repo")
    before = {
        "lock": lock_stages(repo),
        "run_id": json.loads((repo / "outputs/train/run.json").read_text())["run_id"],
        "features_timings_mtime": (repo / "outputs/timings/features.json").stat().st_mtime_ns,
    }
    write_params(repo, {"train": {"epochs": EPOCHS, "run_name": RUN_NAME}})
    log = tmp / "demo-interrupted.log"
    with log.open("w") as out:
        demo = subprocess.Popen(
            [sys.executable, "-m", "pipelines.demo"],
            cwd=repo,
            env=_demo_env(tmp, **SLOW_EPOCHS),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own session and process group, like a terminal's foreground job
        )
    tracked: set[Proc] = set()
    try:
        _wait_for_committed_checkpoint(demo, repo, log)
        tracked = _session_and_descendants(demo.pid)
        commands = [_cmdline(pid) for pid, _ in tracked]
        os.killpg(demo.pid, signal.SIGINT)  # what a terminal does on Ctrl-C
        signalled = time.monotonic()
        while time.monotonic() - signalled < EXIT_WITHIN_S:
            demo.poll()  # reap the demo itself once it exits
            if not _alive(tracked | _session_and_descendants(demo.pid)):
                break
            time.sleep(0.2)
        seconds = time.monotonic() - signalled
        survivors = sorted(
            f"{pid}: {_cmdline(pid)}" for pid, _ in _alive(tracked | _session_and_descendants(demo.pid))
        )
    finally:
        _kill_all(demo.pid, tracked)
        demo.wait(timeout=30)
    output = log.read_text()
    hint = next((line for line in output.splitlines() if line.startswith("interrupted")), "")
    checkpoint = re.search(r"(outputs/ray/\S+)\)$", hint)
    return {
        "repo": repo,
        "tmp": tmp,
        "before": before,
        "hint": hint,
        # the MLflow run of the checkpoint the hint names, read now: the rerun may prune that checkpoint
        "checkpoint_run_id": json.loads((repo / checkpoint[1] / "meta.json").read_text())["run_id"] if checkpoint else None,
        "commands": commands,
        "seconds": seconds,
        "survivors": survivors,
        "returncode": demo.returncode,
        "output": output,
    }


def test_ctrl_c_during_training_ends_every_process_within_30s(interrupted):
    commands = "\n".join(interrupted["commands"])
    # the interrupt landed while the whole stack was up: the assertion below covers all of it
    for expected in (
        "pipelines.demo",
        "uvicorn",
        "dvc repro --single-item train",
        "madapter train",
        "raylet",
    ):
        assert expected in commands, f"{expected!r} was not running when SIGINT was sent:\n{commands}"
    assert not interrupted["survivors"], (
        f"still running {EXIT_WITHIN_S:.0f}s after Ctrl-C:\n"
        + "\n".join(interrupted["survivors"])
        + "\n--- demo output ---\n"
        + interrupted["output"][-4000:]
    )
    assert interrupted["returncode"] == 130, interrupted["output"][-4000:]


def test_ctrl_c_prints_one_line_saying_where_to_resume(interrupted):
    lines = [line for line in interrupted["output"].splitlines() if line.startswith("interrupted")]
    assert len(lines) == 1, interrupted["output"][-4000:]
    match = re.fullmatch(
        r"interrupted during train; run `make demo` again to resume from the last epoch checkpoint "
        rf"\(epoch (\d+)/{EPOCHS}, outputs/ray/{RUN_NAME}-\w+/epoch-\d+\)",
        lines[0],
    )
    assert match, lines[0]
    assert 1 <= int(match.group(1)) < EPOCHS
    after_crash_report = interrupted["output"].split("Crash detected!")[-1]
    assert "Traceback" not in after_crash_report, (
        f"the flow's interrupt must end quietly:\n{after_crash_report[-4000:]}"
    )
    assert not (interrupted["repo"] / "outputs/train/run.json").exists(), "training must not have completed"


@pytest.fixture(scope="module")
def rerun(interrupted) -> subprocess.CompletedProcess:
    """``make demo`` run again in the interrupted repository (to the end: it must resume), by a user
    whose ``PREFECT_API_URL`` names a running Prefect server (the session's): the demo runs its flow
    there instead of starting a temporary server of its own, as the interrupted run did."""
    from prefect.settings import PREFECT_API_URL

    return subprocess.run(
        [sys.executable, "-m", "pipelines.demo"],
        cwd=interrupted["repo"],
        env=_demo_env(interrupted["tmp"], PREFECT_API_URL=PREFECT_API_URL.value()),
        capture_output=True,
        text=True,
        timeout=RERUN_TIMEOUT_S,
    )


def test_the_rerun_ran_its_flow_on_the_configured_prefect_server(interrupted, rerun):
    """One completed flow run of this repository on the server ``PREFECT_API_URL`` named (with a
    temporary server of its own, as the interrupted run had, the run would not be there)."""
    import asyncio

    from prefect.client.orchestration import get_client

    async def runs_of_this_repo() -> list:
        async with get_client() as client:
            runs = await client.read_flow_runs()
        return [run for run in runs if run.parameters.get("repo_dir") == str(interrupted["repo"])]

    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-6000:]
    assert [run.state.type.value for run in asyncio.run(runs_of_this_repo())] == ["COMPLETED"]


def test_rerun_completes_resuming_from_the_checkpoint(interrupted, rerun):
    repo = interrupted["repo"]
    resume_epoch = int(re.search(r"\(epoch (\d+)/", interrupted["hint"]).group(1))
    mlflow_run = interrupted["checkpoint_run_id"]

    output = rerun.stdout + rerun.stderr
    assert rerun.returncode == 0, output[-6000:]
    resumed = re.findall(rf"resuming run {RUN_NAME} after epoch (\d+)", output)
    assert resumed and int(resumed[0]) == resume_epoch, (
        f"Ray did not resume after epoch {resume_epoch}:\n{output[-6000:]}"
    )
    run = json.loads((repo / "outputs/train/run.json").read_text())
    assert run["completed"] and run["epochs_done"] == EPOCHS
    assert run["run_id"] == mlflow_run, "the resumed training must continue the interrupted MLflow run"
    assert (repo / "outputs/evaluate/metrics.json").is_file() and (
        repo / "outputs/register/registration.json"
    ).is_file()
    _assert_a_terminal_a_person_reads(output, repo)


TRAIN_AND_AFTER = ("train", "evaluate", "register")


def test_the_train_param_edit_reran_train_and_what_follows_only(interrupted, rerun):
    """DVC checked every stage before train and skipped it; the features were neither re-extracted nor
    rewritten (same ``dvc.lock`` record, timings file untouched); train, evaluate and register have new
    records, and training is a new MLflow run (new params: not a resumed old run) with the new epochs."""
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-6000:]
    repo, before = interrupted["repo"], interrupted["before"]
    after = lock_stages(repo)
    for stage in STAGE_NAMES:
        log = (repo / "outputs" / "logs" / f"{stage}.log").read_text()
        if stage in TRAIN_AND_AFTER:
            assert f"Running stage '{stage}'" in log and after[stage] != before["lock"][stage], stage
        else:
            assert f"Stage '{stage}' didn't change, skipping" in log, f"{stage} was not checked and skipped:\n{log}"
            assert after[stage] == before["lock"][stage], f"the {stage} stage's deps, params or outputs changed"
    timings = repo / "outputs/timings/features.json"
    assert timings.stat().st_mtime_ns == before["features_timings_mtime"], "the features stage ran"
    assert after["train"]["params"]["params.yaml"]["train"]["epochs"] == EPOCHS
    outs = [{o["path"]: o["md5"] for o in lock["train"]["outs"] if "md5" in o} for lock in (before["lock"], after)]
    assert outs[1]["outputs/train"] != outs[0]["outputs/train"], "train did not write a new model"
    run_id = json.loads((repo / "outputs/train/run.json").read_text())["run_id"]
    assert run_id != before["run_id"], "new training params must give a new training run, not a resumed old one"
    assert mlflow_client(repo).get_run(run_id).data.params["train.epochs"] == str(EPOCHS)


TERMINAL_LINES = 150
"""The whole ``make demo`` after the install (issue 22); this rerun trains, evaluates and registers,
skips the five data stages, then trains and evaluates the baseline and prints the summary."""
LONGEST_LINE = 300


def _assert_a_terminal_a_person_reads(output: str, repo: Path) -> None:
    """The demo's captured output (a pipe: no status line, no bars) fits the budget, dumps no result
    object, and every stage's whole output is in ``outputs/logs/<stage>.log``."""
    lines = output.splitlines()
    assert len(lines) <= TERMINAL_LINES, f"{len(lines)} lines on the terminal:\n{output[-6000:]}"
    longest = max(lines, key=len)
    assert len(longest) <= LONGEST_LINE, f"a {len(longest)}-character line: {longest[:500]}"
    for dump in ("TrainResult(", "EvaluateResult(", "RegisterResult(", "'history': [", "%|"):
        assert dump not in output, f"{dump!r} on the terminal:\n{output[-6000:]}"
    assert "RayTrainWorker" not in output.replace("WARNING", "").split("interrupt-test after epoch")[-1] or all(
        "WARNING" in line or "ERROR" in line for line in lines if "RayTrainWorker" in line
    ), "only a Ray worker's warnings and errors may reach the terminal"
    for stage in ("train", "evaluate", "register"):
        assert re.search(rf"{stage}: done in [\d.]+s: \S", output), f"no one-line result for {stage}:\n{output[-6000:]}"
        log = (repo / "outputs" / "logs" / f"{stage}.log").read_text()
        assert f"Running stage '{stage}'" in log and f"stage {stage}: done in" in log, log[-3000:]
    assert "didn't change, skipping" in (repo / "outputs/logs/features.log").read_text()
    train_log = (repo / "outputs/logs/train.log").read_text()
    assert f"epoch {EPOCHS}/{EPOCHS}: train loss " in train_log and "Running stage 'train'" in train_log


# ----------------------------------------------------------------------------- the parts, quickly
def test_stop_stage_escalates_to_sigterm_then_sigkill_and_leaves_no_process(caplog):
    """A stage that ignores SIGINT, with a child that also ignores SIGTERM, is still gone in seconds."""
    stubborn = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
        "code = 'import signal, time; [signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)];"
        ' print("child ready", flush=True); time.sleep(600)\'\n'
        "subprocess.Popen([sys.executable, '-c', code])\n"
        "time.sleep(600)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", stubborn],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        process_group=0,
    )
    try:
        assert proc.stdout.readline().strip() == "child ready"
        started = time.monotonic()
        with caplog.at_level("WARNING"):
            log = logging.getLogger("test")
            stop_stage(proc, "train", StageOutput("train", log), log, grace_s=1.0, kill_after_s=2.0)
        assert time.monotonic() - started < 8
        assert proc.returncode == -signal.SIGTERM
        with pytest.raises(ProcessLookupError):
            os.killpg(proc.pid, 0)  # no process of the stage's group is left
        assert "sending SIGTERM" in caplog.text and "sending SIGKILL" in caplog.text
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _fake_ray_run(storage: Path, written: int, committed: int) -> None:
    """A Ray Train run directory as Ray leaves it: ``written`` epoch checkpoints, ``committed`` in its snapshot."""
    run = storage / f"{RUN_NAME}-0123456789"
    for epoch in range(1, written + 1):
        (run / f"epoch-{epoch:04d}").mkdir(parents=True)
        (run / f"epoch-{epoch:04d}" / "meta.json").write_text(json.dumps({"epoch": epoch, "run_id": "r"}))
    latest = {"checkpoint_dir_name": f"epoch-{committed:04d}", "metrics": {"epoch": committed}}
    (run / "checkpoint_manager_snapshot.json").write_text(json.dumps({"latest_checkpoint_result": latest}))


def test_resume_hint_names_the_checkpoint_ray_restores(tmp_path):
    params = load_params(REPO / "params.yaml")
    params = params.model_copy(update={"train": params.train.model_copy(update={"run_name": RUN_NAME})})
    assert "before its first epoch checkpoint" in resume_hint(params, tmp_path, "train")
    _fake_ray_run(tmp_path / params.train.storage_path, written=4, committed=2)
    hint = resume_hint(params, tmp_path, "train")
    # Ray commits a report after the worker wrote it: the newest directory (4) is not what it restores
    assert hint.endswith(
        f"(epoch 2/{params.train.epochs}, {params.train.storage_path}/{RUN_NAME}-0123456789/epoch-0002)"
    )
    assert resume_hint(params, tmp_path, "decode") == (
        "interrupted during decode; run `make demo` again to resume: finished stages are skipped, decode starts over"
    )
