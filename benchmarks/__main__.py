"""``make bench``: run every benchmark, then regenerate docs/benchmarks.md from their JSON results.

The runner only sequences the benchmarks, each in its own process (a crash or an out-of-memory
kill of one cannot take the others down) with its own log, and hands their JSONs to
:mod:`benchmarks.report`.  Nothing here computes a number.

    .venv/bin/python -m benchmarks                   # full: benchmarks/results/, docs/benchmarks.md (<= 45 min)
    .venv/bin/python -m benchmarks --quick           # reduced settings (<= 10 min) into outputs/bench-quick/
    .venv/bin/python -m benchmarks --only memory_scaling accuracy   # some benchmarks, then the report
    .venv/bin/python -m benchmarks --report-only     # run nothing: the page and its plots from the JSONs

``--quick`` writes its own results and report (``outputs/bench-quick/``), never the checked-in
ones.  A failed benchmark is reported (exit 1, the tail of its log) after the others have run; the
report is still rendered, a result left from an earlier run showing its own commit.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import SUITE
from benchmarks.harness import REPO, RESULTS, ArgumentParser, git_state, machine, shown

logger = logging.getLogger("benchmarks.bench")

FULL_REPORT = REPO / "docs" / "benchmarks.md"
QUICK_ROOT = REPO / "outputs" / "bench-quick"
LOG_DIR = REPO / "outputs" / "bench-logs"


def run_all(names: Sequence[str], results: Path, quick: bool) -> list[dict[str, Any]]:
    """Run the benchmarks one after the other from the repository root, each into its own log file;
    a failure is logged and the next one still runs.  What each did, as ``bench.json`` records it."""
    from tqdm import tqdm

    from benchmarks.report import declaration

    LOG_DIR.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "MPLBACKEND": "Agg"}
    runs = []
    bar = tqdm(names, desc="benchmarks", unit="benchmark")
    for name in bar:
        budget = declaration(name).minutes[bool(quick)]
        log = LOG_DIR / f"{name}{'-quick' if quick else ''}.log"
        bar.set_postfix_str(f"{name} (~{budget:g} min)")
        logger.info("%s: running (expected ~%g min on a quiet machine; log %s)", name, budget, log)
        # The exact command (recorded in bench.json and in the result itself).
        command = ["-m", f"benchmarks.{name}", *(["--quick"] if quick else []),
                   "--out", shown(results / f"{name}.json")]
        started = time.perf_counter()
        with log.open("w") as out:
            proc = subprocess.run([sys.executable, *command], cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                  env=env, check=False)
        seconds = time.perf_counter() - started
        runs.append({"name": name, "command": " ".join(command), "returncode": proc.returncode,
                     "seconds": round(seconds, 1), "budget_minutes": budget})
        if proc.returncode == 0:
            logger.info("%s: done in %.0f s", name, seconds)
        else:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            logger.error("%s: FAILED (exit %d after %.0f s); last lines of %s:\n%s", name, proc.returncode,
                         seconds, log, tail)
    return runs


def parse_args(argv: Sequence[str] | None):
    parser = ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced settings (<= 10 min), into outputs/bench-quick/")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=SUITE, help=f"run only these ({', '.join(SUITE)})")
    parser.add_argument("--results-dir", type=Path, help="where the JSONs go (default: benchmarks/results, "
                                                         "or outputs/bench-quick/results with --quick)")
    parser.add_argument("--out", "--report", type=Path, help="the report to write (default: docs/benchmarks.md, "
                                                             "or outputs/bench-quick/benchmarks.md with --quick)")
    parser.add_argument("--report-only", action="store_true", help="run nothing; regenerate the report from the JSONs")
    parser.add_argument("--check", action="store_true",
                        help="with --report-only: write nothing; exit 1 if the report differs from a fresh render")
    args = parser.parse_args(argv)
    if args.check and not args.report_only:
        parser.error("argument --check: only with --report-only")
    args.results_dir = args.results_dir or (QUICK_ROOT / "results" if args.quick else RESULTS)
    args.out = args.out or (QUICK_ROOT / "benchmarks.md" if args.quick else FULL_REPORT)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    from benchmarks import report  # imported here so --help stays instant

    args.results_dir.mkdir(parents=True, exist_ok=True)
    failed: list[str] = []
    if not args.report_only:
        started, load_start = time.perf_counter(), os.getloadavg()
        runs = run_all(args.only or SUITE, args.results_dir, args.quick)
        summary = args.results_dir / "bench.json"  # which benchmarks ran, how (command, exit code), how long
        summary.write_text(json.dumps({
            "benchmark": "bench", "quick": args.quick, "git": git_state(),
            "machine": machine(load_start, ("torch", "timm", "ray", "numpy")),
            "seconds_total": round(time.perf_counter() - started, 1), "runs": runs}, indent=2) + "\n")
        failed = [run["name"] for run in runs if run["returncode"] != 0]
        logger.info("all benchmarks: %.1f min; summary %s", (time.perf_counter() - started) / 60, summary)
    try:
        if args.check:
            if not args.out.exists() or args.out.read_text() != report.render(args.results_dir, args.out):
                logger.error("%s is stale: regenerate it with .venv/bin/python -m benchmarks --report-only", args.out)
                return 1
            return 0
        written = report.write_report(args.results_dir, args.out)
    except report.ReportError as err:
        logger.error("%s", err)
        return 1
    logger.info("report: %s", written)
    if failed:
        logger.error("failed: %s (their logs are in %s); the report shows their previous results, if any",
                     ", ".join(failed), LOG_DIR)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
