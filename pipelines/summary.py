"""The run summary a person reads after the pipeline: stages, metrics, per-class accuracy, MLflow
run, registry alias, and (in the demo) the order-blind baseline beside the model.

Built from what the stages wrote (``outputs/evaluate/{metrics.json,per_class.csv}``,
``outputs/train/run.json``, ``outputs/register/registration.json``, the baseline's
``evaluate/`` when it ran; MLflow is asked only for a run's experiment id when no file has it),
so the Prefect artifact, ``make demo``'s closing message and the docs all show the same facts.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from madapter.config import Params
from madapter.paths import StagePaths

logger = logging.getLogger(__name__)

LOCAL_MLFLOW_UI = "http://127.0.0.1:5000"
"""Where ``mlflow ui`` listens by default: run links for a local store point here."""


@dataclass
class RunSummary:
    """Everything the closing report shows, gathered from the stage outputs."""

    metrics: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    experiment_id: str | None = None
    tracking_uri: str | None = None
    registration: dict[str, Any] = field(default_factory=dict)
    stages: list[tuple[str, bool, float]] = field(default_factory=list)
    """(stage, ran, seconds) as the orchestrator saw them."""
    tuning: str = "model"
    """``model.tuning`` of the evaluated model (the per-class table's column name)."""
    per_class: dict[str, tuple[float | None, int]] = field(default_factory=dict)
    """class -> (accuracy, videos) on the evaluated split."""
    baseline: dict[str, Any] = field(default_factory=dict)
    """The order-blind baseline's metrics.json (``make demo`` only), with its ``per_class``."""

    @property
    def run_url(self) -> str | None:
        if not (self.run_id and self.experiment_id):
            return None
        base = self.tracking_uri if (self.tracking_uri or "").startswith("http") else LOCAL_MLFLOW_UI
        return f"{base.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{self.run_id}"

    @property
    def mlflow_ui_command(self) -> str:
        uri = self.tracking_uri or ""
        if uri.startswith("http"):
            return f"open {uri}"
        return f".venv/bin/mlflow ui --backend-store-uri {uri} --port 5000"


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        logger.warning("%s: not valid JSON; left out of the summary", path)
        return {}
    return data if isinstance(data, dict) else {}


def read_per_class(path: Path) -> dict[str, tuple[float | None, int]]:
    """``per_class.csv`` (class,accuracy,support) as class -> (accuracy or None, videos)."""
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8", newline="") as fh:
        return {row["class"]: (float(row["accuracy"]) if row["accuracy"] else None, int(row["support"]))
                for row in csv.DictReader(fh)}


def _first(mappings: Iterable[Mapping[str, Any]], *keys: str) -> Any:
    for mapping in mappings:
        for key in keys:
            if mapping.get(key) not in (None, ""):
                return mapping[key]
    return None


def collect_summary(params: Params, repo: Path, stages: list[tuple[str, bool, float]] | None = None,
                    baseline_dir: Path | None = None) -> RunSummary:
    """Read the stage outputs under ``repo`` into a :class:`RunSummary` (missing files: empty parts).

    ``baseline_dir``: the order-blind baseline's outputs dir (its ``evaluate/``), when it ran.
    """
    paths = StagePaths.from_params(params)
    metrics = _read_json(repo / paths.evaluate / "metrics.json")
    train_run = _read_json(repo / paths.train / "run.json")
    registration = _read_json(repo / paths.register / "registration.json")
    sources = (registration, metrics, train_run)
    summary = RunSummary(
        metrics=metrics,
        run_id=_first(sources, "run_id", "mlflow_run_id"),
        experiment_id=_first(sources, "experiment_id", "mlflow_experiment_id"),
        tracking_uri=_first(sources, "tracking_uri"),
        registration=registration,
        stages=list(stages or []),
        tuning=params.model.tuning,
        per_class=read_per_class(repo / paths.evaluate / "per_class.csv"),
    )
    if baseline_dir is not None and (baseline_dir / "evaluate" / "metrics.json").is_file():
        summary.baseline = _read_json(baseline_dir / "evaluate" / "metrics.json")
        summary.baseline["per_class"] = read_per_class(baseline_dir / "evaluate" / "per_class.csv")
    if summary.tracking_uri is None:
        from madapter.tracking import resolve_tracking_uri

        cwd_independent = params.model_copy(
            update={"base": params.base.model_copy(update={"outputs_dir": repo / params.base.outputs_dir})}
        )
        summary.tracking_uri = resolve_tracking_uri(cwd_independent)
    if summary.run_id and not summary.experiment_id:
        summary.experiment_id = _experiment_of(summary.tracking_uri, summary.run_id)
    return summary


def _experiment_of(tracking_uri: str, run_id: str) -> str | None:
    try:
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=tracking_uri).get_run(run_id).info.experiment_id
    except Exception as err:  # the summary must never fail the pipeline it reports on
        logger.warning("could not look up MLflow run %s: %s", run_id, err)
        return None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The top-level numbers and short strings of metrics.json (nested tables are left out)."""
    return {
        k: v for k, v in metrics.items() if isinstance(v, (int, float, str, bool)) and len(str(v)) <= 80
    }


HEADLINE_METRICS = ("top1", "top5", "mean_class_acc", "protocol", "split", "num_videos", "num_classes", "source",
                    "dataset")
"""The metrics a person reads at the end of ``make demo``; the rest of ``metrics.json`` (where and in what
precision it ran, the checkpoint's digest, the run id) is provenance, in the Prefect artifact."""


def to_markdown(summary: RunSummary, details: bool = True) -> str:
    """The Prefect artifact: stage table, metrics table, MLflow run link, registry alias.

    ``details=False`` is the end of ``make demo``'s terminal (:mod:`pipelines.demo`): no stage table
    (each stage's end line, just above it, says whether it ran and how long it took) and only the
    :data:`HEADLINE_METRICS` rows of the metrics table (the whole record is
    ``outputs/evaluate/metrics.json``).
    """
    lines = ["# madapter pipeline run", ""]
    if summary.stages and details:
        lines += ["## Stages", "", "| stage | result | seconds |", "|---|---|---:|"]
        lines += [f"| {s} | {'ran' if ran else 'up to date'} | {sec:.1f} |" for s, ran, sec in summary.stages]
        lines.append("")
    lines += ["## Metrics", ""]
    scalars = scalar_metrics(summary.metrics)
    if not details:
        scalars = {k: v for k, v in scalars.items() if k in HEADLINE_METRICS}
    if scalars:
        lines += ["| metric | value |", "|---|---:|"] + [f"| {k} | {_fmt(v)} |" for k, v in scalars.items()]
    else:
        lines.append("_no metrics.json yet (evaluate has not run)_")
    lines += _per_class_lines(summary)
    lines += ["", "## MLflow", ""]
    if summary.run_url:
        lines.append(f"- run: [{summary.run_id}]({summary.run_url})")
    elif summary.run_id:
        lines.append(f"- run: `{summary.run_id}`")
    lines.append(f"- tracking URI: `{summary.tracking_uri}`")
    lines.append(f"- open the UI: `{summary.mlflow_ui_command}`")
    lines += ["", "## Model registry", ""]
    reg = summary.registration
    if reg:
        name = _first([reg], "model_name", "name")
        version = _first([reg], "version")
        alias = _first([reg], "alias") or "champion"
        promoted = _first([reg], "promoted")
        lines.append(f"- model `{name}` version `{version}` has alias `{alias}`")
        if promoted is not None:
            before = _first([reg], "champion_before")
            previous = f"previous champion: version `{before}`" if before else "there was no champion yet"
            lines.append(f"- {'promoted' if promoted else 'not promoted'} ({previous})")
        if _first([reg], "reason"):
            lines.append(f"- gate: {reg['reason']}")
        lines.append(f"- load it: `mlflow.pyfunc.load_model('models:/{name}@{alias}')`")
    else:
        lines.append("_not registered yet (register has not run)_")
    return "\n".join(lines) + "\n"


def _acc(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _per_class_lines(summary: RunSummary) -> list[str]:
    """Per-class accuracy of the model, beside the order-blind baseline's when it ran."""
    if not summary.per_class:
        return []
    tuning = summary.tuning
    base = summary.baseline.get("per_class", {})
    head = f"| class | {tuning} | order-blind `linear` | videos |" if base else f"| class | {tuning} | videos |"
    lines = ["", f"## Per class ({summary.metrics.get('split', 'test')} split)", "", head,
             "|---|---:|---:|---:|" if base else "|---|---:|---:|"]
    for name, (acc, videos) in summary.per_class.items():
        middle = f" {_acc(acc)} | {_acc(base.get(name, (None, 0))[0])} |" if base else f" {_acc(acc)} |"
        lines.append(f"| {name} |{middle} {videos} |")
    if base:
        top1 = summary.baseline.get("top1")
        lines += ["", f"Order-blind baseline (same backbone, same cached features, frames averaged): "
                      f"top-1 {_acc(top1)} against {_acc(summary.metrics.get('top1'))}. "
                      "Reversal pairs share every frame, so a model that ignores order cannot beat 50% on any pair."]
    return lines
