"""The index artefact: its one schema, its one writer and its one reader.

``data/index/<ds>/`` holds ``{train,val,test}.csv`` (one :class:`Row` per line, columns
:data:`INDEX_FIELDS`, paths relative to the raw directory, ``start``/``end`` in seconds or empty),
``classes.txt`` (line i = the name of label i) and ``index_report.json`` (:data:`REPORT_FILE`:
counts, missing videos, notes, and :data:`VAL_SPLIT`, the split validation and evaluation use for
``val``).  The index stage writes it; scan, decode, features, train and evaluate read it.  Kept
apart from the stage and the dataset layout parsers so that the readers do not depend on (and are
not re-run by DVC for changes to) the code that parses each dataset.

Which split stands for ``val`` is decided ONCE, by the index stage (:func:`val_stand_in`), and read
through ONE function, :func:`eval_split`.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from madapter.fileio import CSV_ENCODING, atomic_open

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
INDEX_FIELDS = ("path", "label", "label_name", "split", "start", "end")
CLASSES_FILE = "classes.txt"
_TEXT_ENCODING = {"encoding": "utf-8", "errors": "surrogateescape"}
"""``classes.txt``: class names come from folder and file names, which may not be valid UTF-8."""
REPORT_FILE = "index_report.json"
"""The index stage's report: counts, missing videos, notes and :data:`VAL_SPLIT`."""
VAL_SPLIT = "val_split"
"""``index_report.json`` key: the split read when ``val`` is asked for (training's validation,
``evaluate.split: val``): ``val``, or ``test`` for a data set without val videos (UCF101, HMDB51)."""


@dataclass(frozen=True)
class Row:
    """One video of the index: ``<split>.csv`` has one line of these fields per video."""

    path: str
    """POSIX path relative to the raw directory."""
    label: int
    label_name: str
    split: str
    start: float | None = None
    end: float | None = None


def split_csv(index_dir: Path, split: str) -> Path:
    """``<index_dir>/<split>.csv``."""
    return Path(index_dir) / f"{split}.csv"


def _fmt_time(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def _optional_float(text: str | None) -> float | None:
    return float(text) if text not in (None, "") else None


def write_split(index_dir: Path, split: str, rows: Iterable[Row]) -> Path:
    """Write ``<split>.csv`` atomically (header only when ``rows`` is empty); returns its path."""
    path = split_csv(index_dir, split)
    with atomic_open(path, "w", **CSV_ENCODING) as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(INDEX_FIELDS)
        writer.writerows([r.path, r.label, r.label_name, r.split, _fmt_time(r.start), _fmt_time(r.end)] for r in rows)
    return path


def read_index(index_dir: Path, split: str) -> list[Row]:
    """Rows of ``<index_dir>/<split>.csv`` (the shared index schema)."""
    path = split_csv(index_dir, split)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: index split not found; run the index stage first")
    with open(path, **CSV_ENCODING) as fh:
        reader = csv.DictReader(fh)
        missing = set(INDEX_FIELDS[:3]) - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; expected header {','.join(INDEX_FIELDS)}")
        return [Row(path=r["path"], label=int(r["label"]) if r["label"] not in (None, "") else -1,
                    label_name=r.get("label_name") or "", split=r.get("split") or split,
                    start=_optional_float(r.get("start")), end=_optional_float(r.get("end")))
                for r in reader]


def write_classes(index_dir: Path, classes: Iterable[str]) -> Path:
    """Write ``classes.txt`` atomically, one name per line; returns its path."""
    path = Path(index_dir) / CLASSES_FILE
    with atomic_open(path, "w", **_TEXT_ENCODING) as fh:
        fh.write("".join(c + "\n" for c in classes))
    return path


def read_classes(index_dir: Path) -> list[str]:
    """Class names of ``classes.txt``, label order."""
    path = Path(index_dir) / CLASSES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: class list not found; run the index stage first")
    return [line.strip() for line in path.read_text(**_TEXT_ENCODING).splitlines() if line.strip()]


def val_stand_in(val_videos: int) -> str:
    """The rule the index stage records as :data:`VAL_SPLIT`: ``val`` when the data set has val videos,
    else ``test`` (validating and evaluating on test is the convention for UCF101 and HMDB51)."""
    return "val" if val_videos > 0 else "test"


def eval_split(index_dir: Path, split: str = "val") -> str:
    """The split to read when ``split`` is asked for: ``split`` itself, except ``val`` on a data set without
    val videos, which gives ``test`` (logged as a warning, once per call).

    THE reader of that decision: training validates on ``eval_split(index, "val")`` and evaluation
    scores ``eval_split(index, evaluate.split)``.  It reads :data:`VAL_SPLIT` from ``index_report.json``;
    an index written before the stage recorded it (or without a report) gets the same rule
    (:func:`val_stand_in`) applied to its ``val.csv``.
    """
    if split != "val":
        return split
    index_dir = Path(index_dir)
    report = index_dir / REPORT_FILE
    recorded = json.loads(report.read_text(encoding="utf-8")).get(VAL_SPLIT) if report.is_file() else None
    if recorded is None:
        chosen = val_stand_in(len(read_index(index_dir, "val")))
    elif recorded in ("val", "test"):
        chosen = recorded
    else:
        raise ValueError(f"{report}: {VAL_SPLIT} is {recorded!r}, expected 'val' or 'test'; "
                         f"re-run the index stage (dvc repro index)")
    if chosen != "val":
        logger.warning("%s has no val split: validating and evaluating on the %s split", index_dir.name, chosen)
    return chosen
