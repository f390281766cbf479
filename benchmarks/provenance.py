"""What every benchmark result records beside its numbers, and how it is written out.

Shared by the benchmark scripts (imported as a sibling module: they run as
``python benchmarks/<name>.py``): the git commit and dirty flag, the machine and package versions,
and the JSON + ``.png`` plot + ``.md`` table triple that docs/benchmarks.md reads.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
OUTPUTS = ("benchmarks/results", "docs/benchmarks.md")
"""What benchmarks write; changes there do not make the code that produced a result 'dirty'."""
SHARED_MACHINE_NOTE = "a 2-core machine shared with other jobs during the run: compare ratios, not seconds"


def git_state() -> dict[str, Any]:
    """The commit the numbers belong to, and whether the code (not the results) had uncommitted edits."""
    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()

    # The results and the page rendered from them are outputs, not code: a run that rewrites them
    # (make bench writes one JSON after another) must not mark the next result "dirty".
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", *(f":!{p}" for p in OUTPUTS))
    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(changed)}


def command_line(argv: list[str] | None = None) -> str:
    """The exact command that is producing this result, as a user would type it in the repository root.

    The interpreter is shown relative to the repository when it lives there (``.venv/bin/python``),
    so the string can be pasted into a fresh checkout.
    """
    python = Path(sys.executable)
    shown = str(python.relative_to(REPO)) if python.is_relative_to(REPO) else str(python)
    script = Path(sys.argv[0]).resolve()
    script_shown = str(script.relative_to(REPO)) if script.is_relative_to(REPO) else sys.argv[0]
    return shlex.join([shown, script_shown, *(sys.argv[1:] if argv is None else argv)])


def provenance(load_start: tuple[float, ...], packages: Iterable[str], quick: bool, started: float) -> dict[str, Any]:
    """The keys every result JSON carries at its top level, beside its own numbers.

    ``command`` (exact, re-runnable), ``git`` (commit, dirty), ``machine`` (platform, versions,
    load), ``quick`` (the reduced ``--quick`` settings, not the report's full ones) and
    ``seconds_total`` (wall time of the whole script). ``started`` is a ``time.perf_counter()``
    taken when the script began.
    """
    return {
        "command": command_line(), "git": git_state(), "machine": machine(load_start, packages),
        "quick": quick, "seconds_total": round(time.perf_counter() - started, 1),
    }


def package_version(package: str) -> str:
    """The installed version of ``package``, ``"?"`` when it is not installed."""
    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def machine(load_start: tuple[float, ...], packages: Iterable[str]) -> dict[str, Any]:
    """Platform, CPUs, Python, the versions of ``packages`` and the load average at start and end."""
    return {
        "platform": platform.platform(), "machine": platform.machine(), "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "versions": {pkg: package_version(pkg) for pkg in packages},
        "load_avg_1m_start": load_start[0], "load_avg_1m_end": os.getloadavg()[0],
        "note": SHARED_MACHINE_NOTE,
    }


def write_outputs(report: dict[str, Any], out: Path, plot: Callable[[dict[str, Any], Path], None],
                  markdown: Callable[[dict[str, Any], str], str]) -> None:
    """``out`` (JSON), the ``plot`` next to it (``.png``) and the docs table ``markdown`` makes (``.md``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    plot(report, out.with_suffix(".png"))
    shown = str(out.relative_to(REPO)) if out.is_relative_to(REPO) else str(out)
    table = markdown(report, shown)
    out.with_suffix(".md").write_text(table)
    logger.info("wrote %s, .png and .md\n%s", out, table)
