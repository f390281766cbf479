"""One line per stage result and per training epoch: what a person reads on the terminal.

A stage's result is summarised, never ``repr``'d: the train result alone carries every epoch's
record, and its ``repr`` was one 22,000-character line.  :func:`summarize` names the key figures
and where the full result is written (the stage's JSON report, ``run.json``, ``metrics.json``,
``registration.json``), so the line stays short whatever the run.

Training logs a line for about :data:`EPOCH_LINES` epochs of a run (:func:`epoch_is_logged`): a
60-epoch run shows every sixth epoch, plus its first.  Every epoch's numbers are still in
``outputs/train/history.json``, the checkpoint and the MLflow run.

This module imports nothing heavy and reads only small JSON files the stages wrote, so the CLI and a
Ray worker can both call it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from madapter.paths import StagePaths

if TYPE_CHECKING:
    from madapter.config import Params

EPOCH_LINES = 10
"""About this many epoch lines per training run (a resumed run's first epoch comes on top): the demo's
whole terminal fits in 150 lines with its 60 epochs and the baseline's 10."""
EPOCH_FIGURES = {"train": (("train_loss", "loss"), ("train_acc", "acc")), "val": (("val_loss", "loss"), ("val_acc", "acc"))}
"""The history record's keys an epoch line shows (:func:`madapter.train.step.epoch_record`), by split."""


def epoch_is_logged(epoch: int, total: int, first: int = 1) -> bool:
    """Whether epoch ``epoch`` of ``total`` gets its line: all of them for a short run, else every
    ``ceil(total / EPOCH_LINES)``-th, plus ``first`` (the run's, or a resumed run's, first epoch)
    and the last."""
    step = max(1, math.ceil(total / EPOCH_LINES))
    return epoch in (first, total) or epoch % step == 0


def epoch_line(record: Mapping[str, float], total: int) -> str:
    """``epoch 3/60: train loss 1.234, acc 0.512 | val loss 1.101, acc 0.550 | lr 3.0e-03 | 7.5 s``: the
    figures a person follows (the history record has a dozen more, e.g. throughput and memory); a
    split without figures (no validation split) is left out."""
    parts = []
    for split, figures in EPOCH_FIGURES.items():
        shown = ", ".join(f"{label} {float(record[key]):.3f}" for key, label in figures if key in record)
        if shown:
            parts.append(f"{split} {shown}")
    if "lr" in record:
        parts.append(f"lr {float(record['lr']):.1e}")
    seconds = float(record.get("epoch_time_s", 0.0)) + float(record.get("val_time_s", 0.0))
    return f"epoch {int(record['epoch'])}/{total}: {' | '.join([*parts, f'{seconds:.1f} s'])}"


def summarize(stage: str, result: Any, params: Params) -> str:
    """The one-line result of ``stage``: key figures and where the full result is (no ``repr``)."""
    paths = StagePaths.from_params(params)
    summary = _SUMMARIES.get(stage)
    try:
        if summary is not None:
            return summary(result, paths)
    except (KeyError, TypeError, ValueError, AttributeError, OSError):
        pass  # a report without the expected fields: fall back to naming the result
    return _fallback(result)


def _fallback(result: Any) -> str:
    """A result no summary knows: its path, or its type name (never a ``repr`` of unbounded size)."""
    if isinstance(result, Path | str):
        return f"wrote {_shown(result)}"
    return f"{type(result).__name__} (see the stage's output directory)"


def _shown(path: Path | str) -> str:
    """``path`` relative to the working directory (the repository) when it is below it: an absolute
    ``base.outputs_dir`` (the demo's baseline) made the line twice as long."""
    path = Path(path)
    try:
        return str(path.relative_to(Path.cwd())) if path.is_absolute() else str(path)
    except ValueError:
        return str(path)


def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _download(result: Path, paths: StagePaths) -> str:
    files = sum(1 for f in Path(result).rglob("*") if f.is_file())
    return f"{files} files in {_shown(result)}"


def _index(result: Path, paths: StagePaths) -> str:
    report = _read(Path(result) / "index_report.json")
    counts = report["counts"]
    split_counts = " / ".join(f"{split} {n}" for split, n in counts.items())
    return (f"{sum(counts.values())} videos ({split_counts}), {report['num_classes']} classes, "
            f"report {_shown(Path(result) / 'index_report.json')}")


def _scan(result: Path, paths: StagePaths) -> str:
    report = _read(Path(result) / "report.json")
    return (f"{report['ok']} of {report['videos']} videos decode, {report['quarantined']} quarantined, "
            f"report {_shown(Path(result) / 'report.json')}")


def _decode(result: Path, paths: StagePaths) -> str:
    store = _read(Path(result) / "store.json")
    splits = store["splits"]
    videos = sum(s["videos"] for s in splits.values())
    shards = sum(s["shards"] for s in splits.values())
    megabytes = sum(s["bytes"] for s in splits.values()) / 1e6
    return f"{videos} videos in {shards} shard(s), {megabytes:.1f} MB ({store['format']}) -> {_shown(result)}"


def _features(result: Path, paths: StagePaths) -> str:
    timing = paths.timings / "features.json"
    if timing.is_file():
        record = _read(timing)
        return f"{record['videos']} videos in {record['seconds']:.0f}s -> {_shown(result)}"
    return f"wrote {result}"


def _train(result: Any, paths: StagePaths) -> str:
    last = result.history[-1] if result.history else {}
    val = f", val top1 {last['val_acc']:.3f}" if "val_acc" in last else ""
    state = "" if result.completed else " (stopped early: run again to resume)"
    return (f"{result.epochs_done}/{result.epochs} epochs{state}{val}, checkpoint {_shown(result.checkpoint)}, "
            f"MLflow run {result.run_id}")


def _evaluate(result: Mapping[str, Any], paths: StagePaths) -> str:
    return (f"{result['split']} {result['protocol']} on {result['num_videos']} videos: top1 {result['top1']:.3f} "
            f"top5 {result['top5']:.3f} mean class {result['mean_class_acc']:.3f}, "
            f"metrics {_shown(paths.evaluate / 'metrics.json')}")


def _register(result: Any, paths: StagePaths) -> str:
    """From the fields of :class:`madapter.registry.RegisterResult` (formatted here, not there)."""
    before = (f"champion was version {result.champion_before}" if result.champion_before
              else "no champion before")
    verdict = "promoted" if result.promoted else "not promoted"
    return (f"{result.model_name} version {result.version} -> '{result.alias}' ({verdict}: "
            f"{result.metric} {result.value:.3f}, {before}), record {_shown(paths.register / 'registration.json')}")


_SUMMARIES: dict[str, Callable[[Any, StagePaths], str]] = {
    "download": _download,
    "index": _index,
    "scan": _scan,
    "decode": _decode,
    "features": _features,
    "train": _train,
    "evaluate": _evaluate,
    "register": _register,
}
"""Stage name -> its one-line summary (``madapter.stages.STAGE_NAMES``)."""
