"""The benchmark harness: a benchmark is its measurement plus a declaration; everything else is here.

A benchmark module declares one :class:`Benchmark`: what it measures (its docstring, ``run(args)
-> report``), how a report renders (pure ``markdown(report, json_path)`` and ``plot(report,
path)``), its flags and what a run costs.  The harness owns what every benchmark does alike: the
command line (``--quick``, ``--out``, the tests' hidden ``--smoke``, one-line errors, exit 2), the
timing and provenance every result carries (command, commit, machine, versions: a number without
them cannot go in the docs), the JSON + ``.png`` + ``.md`` triple and the exit code (1 when a
part failed, the others still measured; 2 when it cannot run here at all).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, NoReturn

logger = logging.getLogger("benchmarks")

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
OUTPUTS = ("benchmarks/results", "docs/benchmarks.md")
"""What benchmarks write; changes there do not make the code that produced a result 'dirty'."""
SHARED_MACHINE_NOTE = "a 2-core machine shared with other jobs during the run: compare ratios, not seconds"
Report = dict[str, Any]


class BenchmarkError(RuntimeError):
    """The benchmark cannot run here at all; the message is one line saying what to do (exit 2)."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (the contract: one line on stderr naming the flag, exit 2)."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def json_path(value: str) -> Path:
    """``--out``'s type: a ``.json`` path (the ``.png`` and ``.md`` are written beside it)."""
    if Path(value).suffix != ".json":
        raise argparse.ArgumentTypeError(f"must end in .json, got {value}")
    return Path(value)


def positive(value: str) -> int:
    """A count flag's type: an integer >= 1."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: what it measures, how its result renders and what a run costs."""

    name: str
    """Module ``benchmarks/<name>.py``; it writes ``<name>.json`` (+ ``.png``, ``.md``)."""
    doc: str
    """What it measures and why so (the module docstring): ``--help`` prints it."""
    run: Callable[[argparse.Namespace], Report]
    """The measurement: the report's own keys (``benchmark`` goes first, the provenance last)."""
    markdown: Callable[[Report, str], str]
    """The docs table from a report and its JSON's path, pure."""
    plot: Callable[[Report, Path], None]
    """The figure from a report, pure but for the PNG."""
    packages: tuple[str, ...]
    """Versions recorded with the results."""
    quick: str
    """What ``--quick`` reduces (its help)."""
    minutes: tuple[float, float]
    """What a full and a ``--quick`` run cost on a quiet 2-core machine (``python -m benchmarks`` shows it)."""
    failures: Callable[[Report], list[str]] = lambda report: list(report.get("errors") or ())
    """The failed parts of a report (default: its ``errors``, names or part -> error): exit 1 if any."""
    options: Callable[[ArgumentParser], None] | None = None
    """Adds the benchmark's own flags."""
    resolve: Callable[[argparse.Namespace, ArgumentParser], None] | None = None
    """Fills defaults that depend on other flags, checks combinations (``parser.error``: one line, exit 2)."""
    smoke: bool = False
    """A hidden ``--smoke``: the tests' tiny configuration (machinery only, never a result to quote)."""
    work_dir: bool = False
    """A ``--work-dir`` flag; ``args.work`` is a scratch directory, removed afterwards unless given."""
    child: Callable[[argparse.Namespace], Report] | None = None
    """A hidden ``--child VALUE``: measure in this fresh process, print the record as one JSON line."""

    def parse_args(self, argv: list[str] | None = None) -> argparse.Namespace:
        parser = ArgumentParser(prog=f"{self.name}.py", description=self.doc,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--quick", action="store_true", help=f"reduced settings: {self.quick}")
        if self.smoke:
            mode.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)
        parser.add_argument("--out", type=json_path, help=f"JSON path, the .png and .md beside it "
                                                          f"(default: benchmarks/results/{self.name}.json)")
        if self.work_dir:
            parser.add_argument("--work-dir", type=Path, help="scratch directory, kept (default: a temp dir, removed)")
        if self.child:
            parser.add_argument("--child", help=argparse.SUPPRESS)
        if self.options:
            self.options(parser)
        args = parser.parse_args(argv)
        args.smoke = getattr(args, "smoke", False)
        args.configuration = "smoke" if args.smoke else "quick" if args.quick else "full"
        if self.resolve:
            self.resolve(args, parser)
        args.out = args.out or RESULTS / f"{self.name}.json"
        return args

    def main(self, argv: list[str] | None = None) -> int:
        """Parse, measure, add the provenance, write the JSON/plot/table; the exit code."""
        started, load_start = time.perf_counter(), os.getloadavg()
        args = self.parse_args(argv)
        if self.child and args.child:
            logging.disable(logging.WARNING)
            print(json.dumps(self.child(args)))  # noqa: T201 - the child's result line for the parent
            return 0
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        scratch = self.work_dir and args.work_dir is None
        if self.work_dir:
            args.work = (args.work_dir or Path(tempfile.mkdtemp(prefix=f"madapter-bench-{self.name}-"))).resolve()
        try:
            report = {"benchmark": self.name, **self.run(args)}
        except BenchmarkError as err:
            print(err, file=sys.stderr)  # noqa: T201 - the one line a user reads
            return 2
        finally:
            if scratch:
                shutil.rmtree(args.work, ignore_errors=True)
        # The provenance every result carries beside its numbers: the exact, re-runnable command, the commit,
        # the machine, whether it ran --quick (settings reduced) and the whole run's wall time.
        report.update(command=command_line(), git=git_state(), machine=machine(load_start, self.packages),
                      quick=args.quick, seconds_total=round(time.perf_counter() - started, 1))
        write_outputs(report, args.out.resolve(), self.plot, self.markdown)
        failed = self.failures(report)
        if failed:
            logger.error("%s: failed: %s (see 'error' in %s)", self.name, "; ".join(map(str, failed)), args.out)
            return 1
        return 0


# ----------------------------------------------------------------------------- provenance
def git_state() -> dict[str, Any]:
    """The commit the numbers belong to, and whether the code (not the results) had uncommitted edits."""
    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True, check=False).stdout.strip()

    # The results and the page rendered from them are outputs, not code: a run that rewrites them
    # (make bench writes one JSON after another) must not mark the next result "dirty".
    changed = git("status", "--porcelain", "--untracked-files=no", "--", ".", *(f":!{p}" for p in OUTPUTS))
    return {"commit": git("rev-parse", "HEAD") or None, "dirty": bool(changed)}


def shown(path: Path) -> str:
    """A path as results show it: relative to the repository when inside it (pastes into a fresh checkout)."""
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def command_line() -> str:
    """The exact command producing this result, as typed in the repository root (``-m`` kept)."""
    python = Path(sys.executable)  # not resolved: .venv/bin/python, not the interpreter it links to
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    script = Path(sys.argv[0]).resolve()
    entry = (["-m", spec.name.removesuffix(".__main__")] if spec is not None
             else [shown(script) if script.is_relative_to(REPO) else sys.argv[0]])
    return shlex.join([str(python.relative_to(REPO)) if python.is_relative_to(REPO) else str(python), *entry,
                       *sys.argv[1:]])


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


def footer(report: Report, json_path: str, unit: str = "min") -> str:
    """The line naming the JSON, the commit and the exact command (every table traces to its run)."""
    git, m = report["git"], report["machine"]
    took = f"{report['seconds_total'] / 60:.1f} min" if unit == "min" else f"{report['seconds_total']:.0f} s"
    edited = " (uncommitted edits)" if git["dirty"] else ""
    return (f"From `{json_path}`, commit `{(git['commit'] or '?')[:10]}`{edited}, "
            f"`{report['command']}`, {took}; load average {m['load_avg_1m_start']:.1f} at the start, "
            f"{m['load_avg_1m_end']:.1f} at the end.")


def page(lines: list[str], report: Report, json_path: str, unit: str = "min") -> str:
    """A benchmark's docs text: its ``lines``, a blank line and the :func:`footer`."""
    return "\n".join([*lines, "", footer(report, json_path, unit)]) + "\n"


def row(*cells: Any) -> str:
    """One markdown table row; a ``None`` cell is left blank (``| a | | b |``)."""
    return "|" + "|".join(" " if cell is None else f" {cell} " for cell in cells) + "|"


def table(head: Sequence[str], rows: Iterable[Sequence[Any]] = ()) -> list[str]:
    """A markdown table's lines: the header, its rule, then one line per row."""
    return [row(*head), "|" + "---|" * len(head), *(row(*cells) for cells in rows)]


def fmt(value: float | None, spec: str, suffix: str = "", missing: str = "-") -> str:
    """``value`` formatted with ``spec`` and ``suffix``; ``missing`` when there is none (a failed part)."""
    return missing if value is None else f"{value:{spec}}{suffix}"


# ----------------------------------------------------------------------------- outputs
def write_outputs(report: Report, out: Path, plot: Callable[[Report, Path], None],
                  markdown: Callable[[Report, str], str]) -> None:
    """``out`` (JSON), the ``plot`` next to it (``.png``) and the docs table ``markdown`` makes (``.md``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    plot(report, out.with_suffix(".png"))
    table = markdown(report, shown(out))
    out.with_suffix(".md").write_text(table)
    logger.info("wrote %s, .png and .md\n%s", out, table)


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend: plots are files, never windows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig: Any, path: Path, dpi: int = 110, tight: bool = True) -> None:
    """Write ``fig`` to ``path`` and free it."""
    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)


# ----------------------------------------------------------------------------- shared by the measurements
def div(a: float | None, b: float | None) -> float | None:
    """``a / b``; ``None`` when either is missing (a failed part) or ``b`` is 0."""
    return a / b if a is not None and b else None


def last_line(err: BaseException) -> str:
    """The error's type and last message line: what the JSON and the table show for a failed part."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[-1].strip() if lines else ''}"


def attempt(part: str, measure: Callable[..., Report], *args: Any) -> Report:
    """``measure(*args)``, or ``{"error": <its last line>}`` when it fails (as :func:`recorded`)."""
    errors: dict[str, str] = {}
    with recorded(errors, part):
        return measure(*args)
    return {"error": errors[part]}


@contextlib.contextmanager
def recorded(errors: dict[str, str], part: str) -> Iterator[None]:
    """Run one part; if it fails, record its last error line under ``errors[part]`` and go on.
    A :class:`BenchmarkError` (the machine cannot run the benchmark at all) still stops everything."""
    try:
        yield
    except BenchmarkError:
        raise
    except Exception as err:  # noqa: BLE001 - one failing part must not lose the others
        logger.error("%s failed: %s", part, err)
        errors[part] = last_line(err)


def one_thread() -> None:
    """A spawned worker process: one torch thread (the workers run side by side on 2 cores)."""
    import torch

    torch.set_num_threads(1)


def die_with_parent(parent: int) -> None:
    """Linux: this process gets SIGTERM when its parent dies, however it dies (SIGKILL included), so a
    killed benchmark leaves no worker training on.  Exits at once if the parent is already gone."""
    if sys.platform != "linux":
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1  # <linux/prctl.h>
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(1)


def _start_worker(initializer: Callable[[], None], parent: int) -> None:
    die_with_parent(parent)
    initializer()


def in_processes(run: Callable[..., Any], jobs: Sequence[tuple], processes: int,
                 initializer: Callable[[], None] = one_thread) -> Iterator[tuple[int, Any]]:
    """``(i, run(*jobs[i]))`` for every job as it finishes: here, in order, when ``processes`` <= 1, else in
    that many spawned processes (each first runs ``initializer``: one torch thread).

    The workers never outlive the run: a job that fails, a Ctrl-C or a caller that stops iterating
    cancels the jobs not started and terminates the workers (``shutdown`` alone would wait for every
    queued job), and a parent killed outright takes them with it (:func:`die_with_parent`)."""
    if processes <= 1:
        yield from ((i, run(*job)) for i, job in enumerate(jobs))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    before = set(multiprocessing.active_children())
    pool = ProcessPoolExecutor(min(processes, len(jobs)), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_worker, initargs=(initializer, os.getpid()))
    try:
        futures = {pool.submit(run, *job): i for i, job in enumerate(jobs)}
        for future in as_completed(futures):
            yield futures[future], future.result()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        # The workers as they are now: a Ctrl-C can land while the jobs are still being submitted, when
        # a set taken after the submits would be empty and the running jobs would hold up the exit.
        for worker in set(multiprocessing.active_children()) - before:
            worker.terminate()
        raise
    pool.shutdown()


def int_list(value: str) -> list[int]:
    """A flag's type: comma-separated integers (``12,250``)."""
    return [int(v) for v in value.split(",")]


def isolate() -> None:
    """Its own local Ray and scratch MLflow store, never the user's."""
    for key in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI"):
        os.environ.pop(key, None)


def vm_kb(field: str, path: str = "/proc/self/status") -> int:
    """A memory counter in kB: this process's (``VmRSS``, ``VmHWM``) or the machine's (``/proc/meminfo``)."""
    for line in Path(path).read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in {path}")


def reset_peak_rss() -> int:
    """Reset the kernel's peak resident set (``VmHWM``) to the current one; returns that (kB)."""
    rss = vm_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    return rss


def start_child(name: str, *args: str) -> subprocess.Popen:
    """``python -m benchmarks.<name> ... --child``: a fresh process (its own peak memory, no allocator
    state from earlier measurements) that prints its record as its last stdout line."""
    return subprocess.Popen([sys.executable, "-m", f"benchmarks.{name}", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def child_result(proc: subprocess.Popen) -> Report:
    """The record a child printed, or ``{"error": "exit N: <its last stderr line>"}``."""
    stdout, stderr = proc.communicate()
    lines = stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    err = [line for line in stderr.strip().splitlines() if line.strip()]
    return {"error": f"exit {proc.returncode}: {err[-1] if err else 'no output'}"}


def interleaved(loaders: dict[str, dict[str, Callable[[int, int], Any]]], items: int, repeats: int) -> dict[str, Any]:
    """Seconds of every loader (``name -> kind -> load(item, pass)``) on every item in every pass:
    ``name -> kind -> [repeats, items]``.  The loaders take turns item by item, who goes first rotating:
    a neighbour's burst lasts longer than one item, so it hits every loader alike, not one's whole pass."""
    import numpy as np
    from tqdm import tqdm

    times = {name: {kind: np.zeros((repeats, items)) for kind in kinds} for name, kinds in loaders.items()}
    order = list(loaders)
    for rep in tqdm(range(repeats), desc="timing passes", unit="pass", leave=False):
        for i in range(items):
            turn = (rep + i) % len(order)
            for name in order[turn:] + order[:turn]:
                for kind, load in loaders[name].items():
                    started = time.perf_counter()
                    load(i, rep)
                    times[name][kind][rep, i] = time.perf_counter() - started
    return times


def data_stages(params: Any) -> None:
    """download -> index -> scan -> decode: the real stage functions, in this process."""
    from madapter.data.acquire.download import download_dataset
    from madapter.data.index.stage import build_index
    from madapter.data.store.decode import decode_dataset
    from madapter.data.store.scan import scan_videos

    for stage in (download_dataset, build_index, scan_videos, decode_dataset):
        stage(params)
