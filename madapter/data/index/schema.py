"""The index artefact: its one schema, its one writer and its one reader.

``data/index/<ds>/`` holds ``{train,val,test}.csv`` (one :class:`Row` per line, columns
:data:`INDEX_FIELDS`, paths relative to the raw directory, ``start``/``end`` in seconds or empty)
and ``classes.txt`` (line i = the name of label i).  The index stage writes it; scan, decode and
evaluate read it.  Kept apart from the stage and the dataset layout parsers so that the readers do
not depend on (and are not re-run by DVC for changes to) the code that parses each dataset.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from madapter.fileio import CSV_ENCODING, atomic_open

SPLITS = ("train", "val", "test")
INDEX_FIELDS = ("path", "label", "label_name", "split", "start", "end")
CLASSES_FILE = "classes.txt"
_TEXT_ENCODING = {"encoding": "utf-8", "errors": "surrogateescape"}
"""``classes.txt``: class names come from folder and file names, which may not be valid UTF-8."""


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
