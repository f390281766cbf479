"""The index stage: the raw dataset -> ``data/index/<ds>/{train,val,test}.csv``, ``classes.txt``, ``index_report.json``.

It owns what ``index_report.json`` says and the choice of layout parser; the CSVs and
``classes.txt`` are written by the index artefact's one writer (:mod:`madapter.data.index.schema`),
so every later stage is dataset-agnostic.  The report also records, once for every later stage,
which split stands for ``val`` (``val_split``: ``val``, or ``test`` for a data set without val
videos), read back through :func:`madapter.data.index.schema.eval_split`.  Listed videos that are
not on disk are left out, logged, and counted in ``index_report.json`` -- never fatal, because real
copies of these datasets are never quite complete.
"""

from __future__ import annotations

import logging
from pathlib import Path

from madapter.config import Params
from madapter.data.index.layouts import ADAPTERS
from madapter.data.index.schema import (
    REPORT_FILE,
    SPLITS,
    VAL_SPLIT,
    val_stand_in,
    write_classes,
    write_split,
)
from madapter.fileio import write_json_atomic
from madapter.paths import StagePaths

logger = logging.getLogger(__name__)

_MISSING_SHOWN = 50


def build_index(params: Params) -> Path:
    """Stage 2: write the index CSVs, ``classes.txt`` and ``index_report.json``; returns the index dir."""
    paths = StagePaths.from_params(params)
    if not paths.raw.is_dir():
        raise FileNotFoundError(f"{paths.raw}: raw dataset missing; run the download stage first")
    table = ADAPTERS[params.dataset.name](paths.raw, params.dataset)
    for split in SPLITS:
        write_split(paths.index, split, table.rows[split])
    write_classes(paths.index, table.classes)
    counts = {split: len(table.rows[split]) for split in SPLITS}
    report = {
        "dataset": params.dataset.name,
        "fold": params.dataset.fold,
        "num_classes": len(table.classes),
        "counts": counts,
        "missing_count": len(table.missing),
        "missing": table.missing[:_MISSING_SHOWN],
        "test_from": table.test_from,
        VAL_SPLIT: val_stand_in(counts["val"]),
        "notes": table.notes,
    }
    write_json_atomic(paths.index / REPORT_FILE, report, indent=1)
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
