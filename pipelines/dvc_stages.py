"""Run one stage of ``dvc.yaml`` as a subprocess and report whether it really ran.

Orchestrators (the Prefect flow, ``make demo``) never call the stage functions directly: they
run ``dvc repro --single-item <stage>`` so DVC stays the one place that decides what is out of
date, records ``dvc.lock`` and caches outputs.  A stage whose deps and params did not change is
skipped by DVC, and this module reports it as skipped.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

PIPELINE_STAGES: tuple[str, ...] = ("download", "index", "scan", "decode", "train", "evaluate", "register")
"""The stages of ``dvc.yaml`` in dependency order."""

REPO_ROOT = Path(__file__).resolve().parents[1]
"""The repository this code was loaded from (the default place to run the pipeline)."""

_RAN = re.compile(r"Running stage '([^']+)'")
_SKIPPED = re.compile(r"Stage '([^']+)' didn't change, skipping")


class StageFailed(RuntimeError):
    """``dvc repro`` exited non-zero; the message is one line with the stage and DVC's last error."""


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
    log: logging.Logger | logging.LoggerAdapter | None = None,
) -> StageRun:
    """``dvc repro --single-item [--force] <stage>`` in ``repo``, streaming its output to ``log``.

    Raises :class:`StageFailed` when DVC exits non-zero; the stage's outputs from earlier,
    successful runs stay in DVC's cache, so nothing already done is lost.
    """
    if stage not in PIPELINE_STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(PIPELINE_STAGES)}")
    log = log or logger
    args = ["repro", "--single-item"] + (["--force"] if force else []) + [stage]
    started = time.monotonic()
    tail: deque[str] = deque(maxlen=40)
    ran = False
    log.info("dvc %s (in %s)", " ".join(args), repo)
    with subprocess.Popen(
        dvc_command(*args),
        cwd=repo,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip()
            if not line:
                continue
            tail.append(line)
            ran = ran or bool(_RAN.search(line))
            log.info("[%s] %s", stage, line)
        returncode = proc.wait()
    seconds = time.monotonic() - started
    if returncode != 0:
        raise StageFailed(f"dvc stage '{stage}' failed (exit {returncode}): {_last_error(tail)}")
    log.info("stage %s %s in %.1fs", stage, "ran" if ran else "was up to date (skipped)", seconds)
    return StageRun(stage=stage, ran=ran, seconds=seconds, output_tail="\n".join(tail))


def _last_error(lines: deque[str]) -> str:
    """DVC's own ``ERROR:`` line if there is one, else the stage's last ``error:`` line or output line."""
    for prefix in ("ERROR:", "error:"):
        for line in reversed(lines):
            if line.startswith(prefix):
                return line
    return lines[-1] if lines else "no output"


def dvc_push(repo: Path = REPO_ROOT, log: logging.Logger | logging.LoggerAdapter | None = None) -> str:
    """``dvc push`` the pipeline's cached outputs to the default remote (``.dvc/config``)."""
    log = log or logger
    proc = subprocess.run(
        dvc_command("push"), cwd=repo, env=subprocess_env(), capture_output=True, text=True, check=False
    )
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0:
        raise StageFailed(f"dvc push failed (exit {proc.returncode}): {output.splitlines()[-1] if output else ''}")
    log.info("dvc push: %s", output.splitlines()[-1] if output else "done")
    return output
