"""Run one stage of ``dvc.yaml`` as a subprocess and report whether it really ran.

Orchestrators (the Prefect flow, ``make demo``) never call the stage functions directly: they
run ``dvc repro --single-item <stage>`` so DVC stays the one place that decides what is out of
date, records ``dvc.lock`` and caches outputs.  A stage whose deps and params did not change is
skipped by DVC, and this module reports it as skipped.

Each stage runs in its own process group (DVC, the stage command and everything it starts, e.g.
Ray's raylet and workers).  A Ctrl-C therefore reaches the orchestrator alone, which forwards one
SIGINT to the whole stage and waits for it with a deadline (SIGTERM, then SIGKILL, after that):
the stage is always stopped and reaped before the interrupt propagates, whether the signal came
from a terminal, a Prefect cancellation (SIGTERM) or ``kill``.

What the stage prints goes whole to ``outputs/logs/<stage>.log`` (and the Prefect task run's
logs); the terminal gets its start, its end with the one-line result, its epochs and its
warnings (:mod:`pipelines.console`).
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from madapter.stages import STAGE_NAMES
from pipelines.console import Log, StageOutput, shown_path, stage_log_path

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
"""The repository this code was loaded from (the default place to run the pipeline)."""

_RAN = re.compile(r"Running stage '([^']+)'")
_SKIPPED = re.compile(r"Stage '([^']+)' didn't change, skipping")


STOP_GRACE_S = 20.0
"""How long an interrupted stage may take to stop after its SIGINT (Ray tears down its workers and
raylet, DVC releases its lock) before it gets SIGTERM, then ``STOP_KILL_AFTER_S`` later SIGKILL."""
STOP_KILL_AFTER_S = 5.0


class StageFailed(RuntimeError):
    """``dvc repro`` exited non-zero; the message is one line with the stage and DVC's last error."""


class StageInterrupted(KeyboardInterrupt):
    """Ctrl-C (a KeyboardInterrupt) arrived while ``stage`` ran; its processes are gone.

    Still a ``KeyboardInterrupt``, so Prefect, like Python, treats it as an interrupt (the run
    crashes instead of being retried); ``stage`` tells the caller where to resume.  Other
    interrupts (Prefect's ``TerminationSignal`` on cancellation) keep their type and get the
    same ``stage`` attribute.
    """

    def __init__(self, stage: str):
        super().__init__(f"interrupted during stage '{stage}'")
        self.stage = stage


@dataclass(frozen=True)
class StageRun:
    stage: str
    ran: bool
    """True when DVC executed the stage's command; False when it was up to date and skipped."""
    seconds: float
    output_tail: str
    """The last lines DVC and the stage printed (for failure reports and summaries)."""


def subprocess_env() -> dict[str, str]:
    """The environment for DVC: this interpreter's ``bin/`` first on PATH.

    ``dvc.yaml`` commands are ``python -m madapter <stage>``; putting the running virtualenv's
    ``bin`` first makes ``python`` there the interpreter that has madapter installed, even when
    the caller (``make demo``, a Prefect worker) did not activate the virtualenv.
    """
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def dvc_command(*args: str) -> list[str]:
    """``dvc`` from the running interpreter (no reliance on a ``dvc`` executable on PATH)."""
    return [sys.executable, "-m", "dvc", *args]


def run_dvc_stage(
    stage: str,
    repo: Path = REPO_ROOT,
    force: bool = False,
    log: Log | None = None,
    full_log: Log | None = None,
) -> StageRun:
    """``dvc repro --single-item [--force] <stage>`` in ``repo``; its output to ``log``, in short.

    Every line DVC and the stage print goes to ``outputs/logs/<stage>.log`` and to ``full_log``
    (a Prefect task's API-only logger: the task run's logs keep everything); ``log`` (the
    terminal) gets a line when the stage starts, one when it ends with its duration and one-line
    result, its epochs and its warnings (:mod:`pipelines.console`).

    Raises :class:`StageFailed` when DVC exits non-zero; the stage's outputs from earlier,
    successful runs stay in DVC's cache, so nothing already done is lost.  Interrupted (Ctrl-C,
    SIGTERM turned into an exception), it first stops the stage with :func:`stop_stage`, then
    raises :class:`StageInterrupted` for a KeyboardInterrupt, or re-raises any other interrupt
    (Prefect's ``TerminationSignal``) with its ``stage`` attribute set.
    """
    if stage not in STAGE_NAMES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGE_NAMES)}")
    log = log or logger
    args = ["repro", "--single-item"] + (["--force"] if force else []) + [stage]
    log_file = stage_log_path(repo, stage)
    with StageOutput(stage, log, full_log, log_file) as output:
        output.begin(f"dvc {' '.join(args)} (in {repo})")
        proc = subprocess.Popen(
            dvc_command(*args),
            cwd=repo,
            env=subprocess_env(),
            stdin=subprocess.DEVNULL,  # a stage in a background process group must never read the terminal
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            process_group=0,  # the terminal's Ctrl-C reaches us only; we forward it (see module docstring)
        )
        assert proc.stdout is not None
        ran = False
        try:
            for line in proc.stdout:
                output.line(line)
                ran = ran or bool(_RAN.search(line))
            returncode = proc.wait()
        except BaseException as interrupt:  # KeyboardInterrupt, Prefect's TerminationSignal, ...
            stop_stage(proc, stage, output, log)
            if isinstance(interrupt, KeyboardInterrupt) and not isinstance(interrupt, StageInterrupted):
                raise StageInterrupted(stage) from interrupt
            interrupt.stage = stage  # type: ignore[attr-defined] - where it stopped, for the caller's message
            raise
        proc.stdout.close()
        tail = "\n".join(output.tail)
        if returncode != 0:
            raise StageFailed(
                f"dvc stage '{stage}' failed (exit {returncode}): {_last_error(output.tail)} "
                f"(full log: {shown_path(log_file)})"
            )
        seconds = output.end(ran)
    return StageRun(stage=stage, ran=ran, seconds=seconds, output_tail=tail)


def stop_stage(
    proc: subprocess.Popen,
    stage: str,
    output: StageOutput,
    log: Log,
    grace_s: float = STOP_GRACE_S,
    kill_after_s: float = STOP_KILL_AFTER_S,
) -> None:
    """Stop the stage's process group: SIGINT, then SIGTERM after ``grace_s``, then SIGKILL.

    Returns once DVC has exited and no process of the group is left (or after the SIGKILL), so
    nothing of the stage outlives the caller.  The stage's output keeps going to ``output``
    meanwhile (a full pipe would block it from exiting).  A further Ctrl-C here skips straight to
    SIGKILL.
    """
    group = proc.pid  # process_group=0: the group id is DVC's pid
    output.status.stop()  # the lines below, not a status line redrawn under them
    log.warning("stopping stage %s: SIGINT to its processes (DVC, the stage command, Ray)", stage)
    _signal_group(group, signal.SIGINT)
    reader = threading.Thread(target=_drain, args=(proc, output), name=f"{stage}-output", daemon=True)
    reader.start()
    for wait_s, escalate in ((grace_s, signal.SIGTERM), (kill_after_s, signal.SIGKILL), (kill_after_s, None)):
        try:
            if _wait_group(proc, group, wait_s):
                break
        except KeyboardInterrupt:
            log.warning("second interrupt: killing stage %s now", stage)
            _signal_group(group, signal.SIGKILL)
            _wait_group(proc, group, kill_after_s)
            break
        if escalate is None:
            log.error("stage %s: processes of group %d survived SIGKILL", stage, group)
            break
        log.warning("stage %s still running after %.0fs: sending %s", stage, wait_s, escalate.name)
        _signal_group(group, escalate)
    reader.join(timeout=1.0)
    log.warning("stage %s stopped (exit %s)", stage, proc.returncode)


def _signal_group(group: int, sig: signal.Signals) -> None:
    try:
        os.killpg(group, sig)
    except ProcessLookupError:  # every process of the group is already gone
        pass


def _wait_group(proc: subprocess.Popen, group: int, timeout_s: float) -> bool:
    """Wait until DVC has exited (reaped) and its process group is empty; False on timeout."""
    deadline = time.monotonic() + timeout_s
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False
    while True:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _drain(proc: subprocess.Popen, output: StageOutput) -> None:
    """Keep recording what the stopping stage prints (its last words say what was saved)."""
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            output.line(line)
    except (OSError, ValueError):  # pipe closed under us
        pass


def _last_error(lines: Iterable[str]) -> str:
    """DVC's own ``ERROR:`` line if there is one, else the stage's last ``error:`` line or output line."""
    lines = list(lines)
    for prefix in ("ERROR:", "error:"):
        for line in reversed(lines):
            if line.startswith(prefix):
                return line
    return lines[-1] if lines else "no output"


def dvc_push(repo: Path = REPO_ROOT, log: Log | None = None) -> str:
    """``dvc push`` the pipeline's cached outputs to the default remote (``.dvc/config``)."""
    log = log or logger
    proc = subprocess.run(
        dvc_command("push"), cwd=repo, env=subprocess_env(), capture_output=True, text=True, check=False
    )
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise StageFailed(
            f"dvc push failed (exit {proc.returncode}): {output.splitlines()[-1] if output else ''}"
        )
    log.info("dvc push: %s", output.splitlines()[-1] if output else "done")
    return output
