"""The index stage: the raw dataset -> ``data/index/<ds>/{train,val,test}.csv`` + ``classes.txt``.

One CSV schema for every dataset (``path,label,label_name,split,start,end``; paths relative to the
raw directory; ``start``/``end`` in seconds or empty), so every later stage is dataset-agnostic.
Listed videos that are not on disk are left out, logged, and counted in ``index_report.json``
— never fatal, because real copies of these datasets are never quite complete.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path

from madapter.config import Params
from madapter.data.index.layouts import ADAPTERS, SPLITS, IndexTable, Row, list_layout
from madapter.paths import StagePaths

logger = logging.getLogger(__name__)

INDEX_COLUMNS = ("path", "label", "label_name", "split", "start", "end")
REPORT_FILE = "index_report.json"
_MISSING_SHOWN = 50


def _fmt_time(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def _write_atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as fh:
        write(fh)
    os.replace(tmp, path)


def write_split_csv(path: Path, rows: list[Row]) -> None:
    def write(fh) -> None:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(INDEX_COLUMNS)
        for r in rows:
            writer.writerow([r.path, r.label, r.label_name, r.split, _fmt_time(r.start), _fmt_time(r.end)])

    _write_atomic(path, write)


def read_split_csv(path: Path) -> list[Row]:
    """Read one index CSV back (used by tests and by later stages that want typed rows)."""
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as fh:
        return [
            Row(
                r["path"],
                int(r["label"]),
                r["label_name"],
                r["split"],
                float(r["start"]) if r["start"] else None,
                float(r["end"]) if r["end"] else None,
            )
            for r in csv.DictReader(fh)
        ]


def _table_for(params: Params, raw: Path) -> IndexTable:
    name = params.dataset.name
    if name in ("list", "synthetic"):
        return list_layout(raw, params.dataset.fold, params.dataset.classes_file)
    return ADAPTERS[name](raw, params.dataset.fold)


def build_index(params: Params) -> Path:
    """Stage 2: write the index CSVs, ``classes.txt`` and ``index_report.json``; returns the index dir."""
    paths = StagePaths.from_params(params)
    if not paths.raw.is_dir():
        raise FileNotFoundError(f"{paths.raw}: raw dataset missing; run the download stage first")
    table = _table_for(params, paths.raw)
    paths.index.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        write_split_csv(paths.index / f"{split}.csv", table.rows[split])
    _write_atomic(paths.index / "classes.txt", lambda fh: fh.write("".join(c + "\n" for c in table.classes)))
    counts = {split: len(table.rows[split]) for split in SPLITS}
    report = {
        "dataset": params.dataset.name,
        "fold": params.dataset.fold,
        "num_classes": len(table.classes),
        "counts": counts,
        "missing_count": len(table.missing),
        "missing": table.missing[:_MISSING_SHOWN],
        "test_from": table.test_from,
        "notes": table.notes,
    }
    _write_atomic(paths.index / REPORT_FILE, lambda fh: json.dump(report, fh, indent=1))
    if table.missing:
        logger.warning(
            "%s: %d listed videos are not on disk and were left out (first: %s); see %s",
            params.dataset.name,
            len(table.missing),
            table.missing[0],
            paths.index / REPORT_FILE,
        )
    for note in table.notes:
        logger.info("%s: %s", params.dataset.name, note)
    logger.info("%s index: %s videos, %d classes -> %s", params.dataset.name, counts, len(table.classes), paths.index)
    return paths.index
