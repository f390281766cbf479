"""The one index schema every dataset is turned into (written by ``index``, read by ``scan``/``decode``).

Kept apart from the dataset adapters so that the stages reading the index do not depend on
(and are not re-run by DVC for changes to) the code that parses each dataset's layout.
"""

from __future__ import annotations

from dataclasses import dataclass

SPLITS = ("train", "val", "test")
INDEX_FIELDS = ("path", "label", "label_name", "split", "start", "end")


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
