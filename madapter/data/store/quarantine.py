"""The quarantine list: the videos the scan stage found unusable, and why.

``data/scan/<ds>/quarantine.csv`` (``path,reason``; dataset-relative paths) is written by the scan
stage and read by the decode stage, which leaves those videos out.  Its writer and reader live here,
apart from both stages, so that neither stage imports the other (and DVC re-runs decode for a
change to the file's format, not for a change to how scan probes videos).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

from madapter.fileio import CSV_ENCODING, atomic_open

QUARANTINE_FILE = "quarantine.csv"
QUARANTINE_FIELDS = ("path", "reason")


def write_quarantine(scan_dir: Path, entries: Iterable[tuple[str, str]]) -> Path:
    """Write ``(relative path, reason)`` pairs to ``<scan_dir>/quarantine.csv`` atomically; returns its path."""
    path = Path(scan_dir) / QUARANTINE_FILE
    with atomic_open(path, "w", **CSV_ENCODING) as fh:
        writer = csv.writer(fh)
        writer.writerow(QUARANTINE_FIELDS)
        writer.writerows(entries)
    return path


def read_quarantine(scan_dir: Path) -> dict[str, str]:
    """``{relative path: reason}`` from ``<scan_dir>/quarantine.csv``."""
    path = Path(scan_dir) / QUARANTINE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: quarantine list not found; run the scan stage first")
    with open(path, **CSV_ENCODING) as fh:
        return {r["path"]: r["reason"] for r in csv.DictReader(fh)}
