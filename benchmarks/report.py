"""docs/benchmarks.md, rendered from the benchmarks' JSON results and one Jinja2 template.

Why generated: every number a reader sees must be one a benchmark wrote, with its command and
commit beside it, so a figure cannot go stale or be typed by hand.  The prose lives in
``benchmarks/templates/benchmarks.md.j2`` and refers to numbers only through ``{{ ... }}``
placeholders (``tests/benchmarks/test_report.py`` checks that it types none); the tables and
plots come from each benchmark's declared pure ``markdown(report, json_path)`` and
``plot(report, path)`` (:class:`benchmarks.harness.Benchmark`), applied to the JSON; the
claim-by-claim verdicts come from :mod:`benchmarks.claims`; published figures from
``benchmarks/published.json`` (cited, not measured).  Run through ``python -m benchmarks
--report-only`` (``--check``: exit 1 if the page is stale).
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

from benchmarks import SUITE, claims
from benchmarks.harness import REPO, Benchmark

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "templates" / "benchmarks.md.j2"
PUBLISHED = HERE / "published.json"
REQUIRED_KEYS = ("benchmark", "command", "git", "machine")
"""What every result must carry for its table row to be traceable (see :func:`benchmarks.harness.provenance`)."""
OPTIONAL_RESULTS = {"memory_cuda": "memory"}
"""Results ``make bench`` cannot produce here (GPU); rendered when someone checks one in. Value: the module."""


class ReportError(RuntimeError):
    """A result cannot be rendered; the message names the file and what to do."""


def result_names() -> list[str]:
    """The benchmarks in report order (``make bench``'s) plus the optional GPU results."""
    return [*SUITE, *OPTIONAL_RESULTS]


def declaration(name: str) -> Benchmark:
    """The benchmark that writes result ``name`` (its ``markdown``/``plot``); importing it starts nothing."""
    return importlib.import_module(f"benchmarks.{OPTIONAL_RESULTS.get(name, name)}").BENCHMARK


def load_results(results_dir: Path) -> dict[str, dict[str, Any] | None]:
    """Every known result JSON under ``results_dir`` (``None``: not run), each checked for provenance."""
    results: dict[str, dict[str, Any] | None] = {}
    for name in result_names():
        path = results_dir / f"{name}.json"
        if not path.exists():
            results[name] = None
            continue
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ReportError(f"{path}: not valid JSON ({err.msg}, line {err.lineno}); "
                              f"re-run it: .venv/bin/python -m benchmarks --only {name}") from err
        missing = [k for k in REQUIRED_KEYS if k not in data]
        if missing:
            raise ReportError(f"{path}: no {', '.join(missing)} (written by an older script?); "
                              f"re-run it: .venv/bin/python -m benchmarks --only {name}")
        results[name] = data
    return results


def load_run_summary(results_dir: Path) -> dict[str, Any] | None:
    """``bench.json``, the runner's record of the last ``make bench`` (commands, exit codes, minutes)."""
    path = results_dir / "bench.json"
    return json.loads(path.read_text()) if path.exists() else None


def shown(path: Path) -> str:
    """A path as the report prints it: relative to the repository when inside it."""
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def tables(results: dict[str, dict[str, Any] | None], results_dir: Path) -> dict[str, str]:
    """Each present result's markdown table(s), from its own module."""
    out = {}
    for name, data in results.items():
        if data is not None:
            out[name] = declaration(name).markdown(data, shown(results_dir / f"{name}.json")).rstrip("\n")
    return out


def plot_all(results: dict[str, dict[str, Any] | None], results_dir: Path) -> None:
    """Redraw every present result's PNG from its JSON (so a plot can never disagree with its table)."""
    for name, data in results.items():
        if data is not None:
            declaration(name).plot(data, results_dir / f"{name}.png")


def _ratio(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}x"


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def render(results_dir: Path, report_path: Path) -> str:
    """The report's text; pure (reads the JSONs and the template, writes nothing)."""
    import jinja2

    results = load_results(results_dir)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE.parent), undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False,
    )
    env.filters.update(ratio=_ratio, num=_num)
    figures = {name: os.path.relpath(results_dir / f"{name}.png", report_path.parent)
               for name, data in results.items() if data is not None}
    context = {
        "r": results, "bench": load_run_summary(results_dir), "tables": tables(results, results_dir), "figures": figures,
        "claims": claims.assess(results), "published": json.loads(PUBLISHED.read_text()),
        "results_dir": shown(results_dir), "template": shown(TEMPLATE),
    }
    try:
        return env.get_template(TEMPLATE.name).render(**context).rstrip("\n") + "\n"
    except jinja2.UndefinedError as err:
        raise ReportError(f"{TEMPLATE}: {err.message}; a result in {results_dir} lacks a key the template "
                          "reads: re-run that benchmark (python -m benchmarks --only NAME)") from err


def write_report(results_dir: Path, report_path: Path) -> Path:
    """Redraw the plots and write the report; returns its path."""
    plot_all(load_results(results_dir), results_dir)
    text = render(results_dir, report_path)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(text)
    return report_path
