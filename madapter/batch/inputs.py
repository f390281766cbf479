"""Which videos ``batch-predict`` scores: an index split, a folder (recursive) or a list file.

Each source becomes a list of :class:`VideoInput` in a stable order (index order, sorted paths,
list order), and the output has one row per input in that order.  Nothing here opens a video: a
missing or broken file is the decoding workers' business and becomes an error ROW, never an
exception; only arguments that make the whole run meaningless (no such folder, an empty list,
an unknown split) are a :class:`ConfigError` naming the option and what to do.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from madapter.config import ConfigError, Params
from madapter.data.index.layouts import VIDEO_SUFFIXES
from madapter.data.index.schema import SPLITS, read_index, split_csv
from madapter.data.video import display_path
from madapter.paths import StagePaths

_LIST_ENCODING = {"encoding": "utf-8", "errors": "surrogateescape"}
"""List files may name files whose names are not valid UTF-8: keep their bytes (the decoder then
reports them in their row)."""


@dataclass(frozen=True)
class VideoInput:
    """One video to score: how the output names it, the file to read, and an optional segment."""

    path: str
    """The ``path`` column: the index's relative path, the line of the list, or the file found
    under the folder (printable even when the file name is not valid UTF-8)."""
    source: str
    """Absolute file name to decode (``os.fsdecode`` form)."""
    start: float | None = None
    end: float | None = None
    true_label: str | None = None
    """The index's label name (``--split`` only), written as the ``true_label`` column."""


def from_split(params: Params, split: str) -> list[VideoInput]:
    """The split's videos of ``params.dataset`` in index order, on their index segments (as ``evaluate``).

    Every index row is scored, including videos the scan quarantined: each input gets its row
    (a quarantined video gets an error row saying why it cannot be read).
    """
    if split not in SPLITS:
        raise ConfigError(f"--split {split}: not a split; use one of {', '.join(SPLITS)}")
    paths = StagePaths.from_params(params)
    csv_file = split_csv(paths.index, split)
    if not csv_file.is_file():
        raise ConfigError(f"--split {split}: {csv_file} not found; run the index stage first "
                          f"(python -m madapter index) or pass --folder / --list")
    raw = paths.raw.resolve()
    rows = read_index(paths.index, split)
    if not rows:
        raise ConfigError(f"--split {split}: {csv_file} lists no videos; choose another split or pass --folder / --list")
    return [VideoInput(display_path(row.path), os.fsdecode(raw / row.path), row.start, row.end, row.label_name)
            for row in rows]


def from_folder(folder: Path) -> list[VideoInput]:
    """Every video file under ``folder`` (recursive; extensions of :data:`VIDEO_SUFFIXES`), sorted by path."""
    if not folder.is_dir():
        raise ConfigError(f"--folder {folder}: no such directory; pass an existing folder of video files")
    found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    if not found:
        raise ConfigError(f"--folder {folder}: no video files ({', '.join(sorted(VIDEO_SUFFIXES))}) under it; "
                          "pass the folder that holds the videos")
    return [VideoInput(display_path(p), os.fsdecode(p.resolve())) for p in found]


def from_list(list_file: Path) -> list[VideoInput]:
    """The videos of a text file, one path per line, in file order (blank lines and ``#`` comments skipped).

    A relative path is relative to the list file's folder, so a list travels with its videos.
    A path that does not exist is still an input: it gets an error row.
    """
    if not list_file.is_file():
        raise ConfigError(f"--list {list_file}: not found; pass a text file with one video path per line")
    lines = [line.strip() for line in list_file.read_text(**_LIST_ENCODING).splitlines()]
    entries = [line for line in lines if line and not line.startswith("#")]
    if not entries:
        raise ConfigError(f"--list {list_file}: lists no videos; put one video path per line")
    base = list_file.resolve().parent
    return [VideoInput(display_path(entry), os.fsdecode(base / entry)) for entry in entries]


def gather_inputs(params: Params, split: str | None, folder: Path | None, list_file: Path | None) -> list[VideoInput]:
    """The inputs of exactly one of ``--split``, ``--folder`` and ``--list``."""
    given = [name for name, value in (("--split", split), ("--folder", folder), ("--list", list_file))
             if value is not None]
    if len(given) != 1:
        shown = ", ".join(given) if given else "none"
        raise ConfigError(f"batch-predict: pass exactly one of --split, --folder or --list (got {shown})")
    if split is not None:
        return from_split(params, split)
    if folder is not None:
        return from_folder(folder)
    assert list_file is not None
    return from_list(list_file)
