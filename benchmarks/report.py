"""docs/benchmarks.md, rendered from the benchmarks' JSON results and one Jinja2 template.

Why generated: every number a reader sees must be one a benchmark wrote, with its command and
commit beside it, so a figure cannot go stale or be typed by hand.  The prose lives in the
template and refers to numbers only through ``{{ ... }}`` placeholders (tests check it types
none); the tables and plots come from each benchmark's pure ``markdown`` and ``plot``, the
verdicts from :mod:`benchmarks.claims`, published figures from ``published.json`` (cited, not
measured).  ``python -m benchmarks --report-only`` (``--check``: exit 1 if the page is stale).
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path
from typing import Any

from benchmarks import SUITE, claims
from benchmarks.harness import Benchmark, fmt, shown

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "templates" / "benchmarks.md.j2"
PUBLISHED = HERE / "published.json"
REQUIRED_KEYS = ("benchmark", "command", "git", "machine")
"""What every result must carry for its table row to be traceable (see :func:`benchmarks.harness.provenance`)."""
OPTIONAL_RESULTS = {"memory_cuda": "memory"}
"""Results ``make bench`` cannot produce here (GPU); rendered when someone checks one in. Value: the module."""


class ReportError(RuntimeError):
    """A result cannot be rendered; the message names the file and what to do."""


def declaration(name: str) -> Benchmark:
    """The benchmark that writes result ``name`` (its ``markdown``/``plot``); importing it starts nothing."""
    return importlib.import_module(f"benchmarks.{OPTIONAL_RESULTS.get(name, name)}").BENCHMARK


def load_results(results_dir: Path) -> dict[str, dict[str, Any] | None]:
    """Every known result JSON under ``results_dir`` in report order (``make bench``'s, then the optional
    GPU results; ``None``: not run), each checked for provenance."""
    results: dict[str, dict[str, Any] | None] = {}
    for name in [*SUITE, *OPTIONAL_RESULTS]:
        path, rerun = results_dir / f"{name}.json", f"re-run it: .venv/bin/python -m benchmarks --only {name}"
        try:
            results[name] = data = json.loads(path.read_text()) if path.exists() else None
        except json.JSONDecodeError as err:
            raise ReportError(f"{path}: not valid JSON ({err.msg}, line {err.lineno}); {rerun}") from err
        missing = [k for k in REQUIRED_KEYS if data is not None and k not in data]
        if missing:
            raise ReportError(f"{path}: no {', '.join(missing)} (written by an older script?); {rerun}")
    return results


def tables(results: dict[str, dict[str, Any] | None], results_dir: Path) -> dict[str, str]:
    """Each present result's markdown table(s), from its own module."""
    return {name: declaration(name).markdown(data, shown(results_dir / f"{name}.json")).rstrip("\n")
            for name, data in results.items() if data is not None}


def render(results_dir: Path, report_path: Path) -> str:
    """The report's text; pure (reads the JSONs and the template, writes nothing)."""
    import jinja2

    results = load_results(results_dir)
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE.parent), undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, autoescape=False,
    )
    env.filters.update(ratio=lambda value, digits=3: fmt(value, f".{digits}f", "x", "n/a"),
                       num=lambda value, digits=2: fmt(value, f".{digits}f", missing="n/a"))
    figures = {name: os.path.relpath(results_dir / f"{name}.png", report_path.parent)
               for name, data in results.items() if data is not None}
    summary = results_dir / "bench.json"  # the runner's record of the last make bench (commands, exit codes)
    context = {
        "r": results, "bench": json.loads(summary.read_text()) if summary.exists() else None,
        "tables": tables(results, results_dir), "figures": figures, "claims": claims.assess(results),
        "published": json.loads(PUBLISHED.read_text()), "results_dir": shown(results_dir),
        "template": shown(TEMPLATE),
    }
    try:
        return env.get_template(TEMPLATE.name).render(**context).rstrip("\n") + "\n"
    except jinja2.UndefinedError as err:
        raise ReportError(f"{TEMPLATE}: {err.message}; a result in {results_dir} lacks a key the template "
                          "reads: re-run that benchmark (python -m benchmarks --only NAME)") from err


def write_report(results_dir: Path, report_path: Path) -> Path:
    """Redraw every present result's PNG from its JSON (a plot can never disagree with its table), then
    write the report; returns its path."""
    for name, data in load_results(results_dir).items():
        if data is not None:
            declaration(name).plot(data, results_dir / f"{name}.png")
    text = render(results_dir, report_path)
    report_path.parent.mkdir(parents=True, exist_ok=True)
    report_path.write_text(text)
    return report_path
