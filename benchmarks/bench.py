"""``make bench``: run every benchmark, then regenerate docs/benchmarks.md from their JSON results.

Each benchmark is one script (``benchmarks/<name>.py``) that writes ``<name>.json`` (its numbers,
the exact command, git commit, machine and versions), ``<name>.png`` and ``<name>.md``.  This
runner only sequences them, each in its own process (a crash or an out-of-memory kill of one
cannot take the others down), keeps each one's log, and then hands the JSONs to
``benchmarks/report.py``, which writes the report.  Nothing here computes a number.

    .venv/bin/python benchmarks/bench.py                  # full: benchmarks/results/, docs/benchmarks.md (<= 45 min)
    .venv/bin/python benchmarks/bench.py --quick          # reduced settings (<= 10 min) into outputs/bench-quick/
    .venv/bin/python benchmarks/bench.py --only memory_scaling accuracy   # some benchmarks, then the report

``--quick`` never overwrites the checked-in results: it writes its own results directory and
report (``outputs/bench-quick/``), so a smoke run cannot replace the full figures by accident.
A failed benchmark is reported (exit 1, the tail of its log) after the others have run; the report
is still rendered from whatever results exist, and a result left over from an earlier run shows
its own commit and date in the report.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from provenance import REPO, git_state, machine  # benchmarks/provenance.py
from tqdm import tqdm

logger = logging.getLogger("benchmarks.bench")

HERE = Path(__file__).resolve().parent
FULL_RESULTS = HERE / "results"
FULL_REPORT = REPO / "docs" / "benchmarks.md"
QUICK_ROOT = REPO / "outputs" / "bench-quick"
LOG_DIR = REPO / "outputs" / "bench-logs"


@dataclass(frozen=True)
class Benchmark:
    """One script of ``benchmarks/`` and what a run of it is expected to cost on a quiet 2-core machine."""

    name: str
    """Script ``benchmarks/<name>.py``; it writes ``<name>.json``."""
    full_minutes: float
    quick_minutes: float


BENCHMARKS: tuple[Benchmark, ...] = (
    # The memory sweep first: it needs the most memory (a ViT-L full fine-tuning step, ~11 GB) and
    # memory.py reuses its points. Then in the order data flows: decode -> store -> features -> train.
    Benchmark("memory_scaling", 13.0, 1.5),
    Benchmark("memory", 0.2, 0.2),
    Benchmark("decode", 0.2, 0.2),
    Benchmark("store", 3.0, 1.0),
    Benchmark("feature_cache", 2.5, 1.5),
    Benchmark("train_scaling", 3.5, 1.0),
    Benchmark("accuracy", 12.0, 3.0),
    Benchmark("ablations", 5.0, 1.0),
)
"""Every benchmark ``make bench`` runs. The GPU ones (``memory.py --device cuda``, ``make gpu-check``)
need CUDA and are not run here; the report says so."""

BY_NAME = {b.name: b for b in BENCHMARKS}


@dataclass
class Outcome:
    """What one benchmark's process did."""

    name: str
    command: list[str]
    returncode: int
    seconds: float
    log: Path

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def command_for(bench: Benchmark, results: Path, quick: bool) -> list[str]:
    """The exact command line the runner executes (recorded in bench.json and in the result itself)."""
    script = HERE / f"{bench.name}.py"
    out = (results / f"{bench.name}.json").resolve()
    return [sys.executable, str(script.relative_to(REPO)), *(["--quick"] if quick else []),
            "--out", str(out.relative_to(REPO)) if out.is_relative_to(REPO) else str(out)]


def run_one(bench: Benchmark, results: Path, quick: bool) -> Outcome:
    """Run one benchmark script from the repository root, its output into its own log file."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = LOG_DIR / f"{bench.name}{'-quick' if quick else ''}.log"
    command = command_for(bench, results, quick)
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "MPLBACKEND": "Agg"}
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.run(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)
    return Outcome(bench.name, command, proc.returncode, time.perf_counter() - started, log)


def tail(path: Path, lines: int = 15) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def write_summary(outcomes: list[Outcome], results: Path, quick: bool, started: float,
                  load_start: tuple[float, ...]) -> Path:
    """``bench.json``: which benchmarks ran, with which command, how long, and whether they succeeded."""
    summary = {
        "benchmark": "bench",
        "quick": quick,
        "git": git_state(),
        "machine": machine(load_start, ("torch", "timm", "ray", "numpy")),
        "seconds_total": round(time.perf_counter() - started, 1),
        "runs": [{"name": o.name, "command": " ".join(o.command[1:]), "returncode": o.returncode,
                  "seconds": round(o.seconds, 1), "budget_minutes": (BY_NAME[o.name].quick_minutes if quick
                                                                    else BY_NAME[o.name].full_minutes)}
                 for o in outcomes],
    }
    path = results / "bench.json"
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="reduced settings (<= 10 min), into outputs/bench-quick/")
    parser.add_argument("--only", nargs="+", metavar="NAME", help=f"run only these ({', '.join(BY_NAME)})")
    parser.add_argument("--results-dir", type=Path, help="where the JSONs go (default: benchmarks/results, "
                                                         "or outputs/bench-quick/results with --quick)")
    parser.add_argument("--report", type=Path, help="the report to write (default: docs/benchmarks.md, "
                                                    "or outputs/bench-quick/benchmarks.md with --quick)")
    parser.add_argument("--report-only", action="store_true", help="run nothing; regenerate the report from the JSONs")
    args = parser.parse_args(argv)
    unknown = [n for n in args.only or () if n not in BY_NAME]
    if unknown:
        parser.error(f"--only: unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BY_NAME)}")
    args.results_dir = args.results_dir or (QUICK_ROOT / "results" if args.quick else FULL_RESULTS)
    args.report = args.report or (QUICK_ROOT / "benchmarks.md" if args.quick else FULL_REPORT)
    return args


def run_all(selected: list[Benchmark], results: Path, quick: bool) -> list[Outcome]:
    """Run the benchmarks one after the other; a failure is logged and the next one still runs."""
    outcomes = []
    bar = tqdm(selected, desc="benchmarks", unit="benchmark")
    for bench in bar:
        budget = bench.quick_minutes if quick else bench.full_minutes
        bar.set_postfix_str(f"{bench.name} (~{budget:g} min)")
        logger.info("%s: running (expected ~%g min on a quiet machine; log %s)", bench.name, budget,
                    LOG_DIR / f"{bench.name}{'-quick' if quick else ''}.log")
        outcome = run_one(bench, results, quick)
        outcomes.append(outcome)
        if outcome.ok:
            logger.info("%s: done in %.0f s", bench.name, outcome.seconds)
        else:
            logger.error("%s: FAILED (exit %d after %.0f s); last lines of %s:\n%s", bench.name,
                         outcome.returncode, outcome.seconds, outcome.log, tail(outcome.log))
    return outcomes


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    args = parse_args(argv)
    import report  # benchmarks/report.py; imported here so --help stays instant

    args.results_dir.mkdir(parents=True, exist_ok=True)
    failed: list[str] = []
    if not args.report_only:
        started, load_start = time.perf_counter(), os.getloadavg()
        selected = [BY_NAME[n] for n in args.only] if args.only else list(BENCHMARKS)
        outcomes = run_all(selected, args.results_dir, args.quick)
        summary = write_summary(outcomes, args.results_dir, args.quick, started, load_start)
        failed = [o.name for o in outcomes if not o.ok]
        logger.info("all benchmarks: %.1f min; summary %s", (time.perf_counter() - started) / 60, summary)
    try:
        written = report.write_report(args.results_dir, args.report)
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
