"""One small parser per dataset layout: raw directory -> rows of the one index schema.

What this module owns: how each dataset's official split files map onto
:class:`~madapter.data.index.schema.Row` -- and nothing about writing them (the index stage does
that through :mod:`madapter.data.index.schema`).  :data:`ADAPTERS` is the one dispatch from
``dataset.name`` to a parser.  Every parser returns an :class:`IndexTable`: rows per split
(``train``, ``val``, ``test``), the class names (row ``label`` indexes them) and the listed videos
that are not on disk.  Missing videos are *reported*, not fatal: real mirrors lose files (Kinetics
especially).

Official splits and the quirks each adapter handles:
- UCF101: ``classInd.txt`` (1-based), ``trainlistNN.txt`` (with labels) / ``testlistNN.txt`` (without:
  the label comes from the folder).  The folder is ``HandstandPushups`` while the file names say
  ``HandStandPushups``, and some copies differ in case, so folders are matched case-insensitively.
  No official val split.
- HMDB51: ``<class>_test_splitN.txt`` with tags 1 = train, 2 = test, 0 = unused; classes are the
  sorted folder names.  No official val split.
- Kinetics: CSVs ``label,youtube_id,time_start,time_end,split[,is_cc]`` with quoted labels; ids may
  start with ``-``.  ``time_start``/``time_end`` are seconds into the full YouTube video, so a row
  carries them as ``start``/``end`` ONLY when the file found is that full video, named by bare id
  (``<id>.mp4``, as youtube-dl / yt-dlp name downloads).  CVDF's files are already trimmed to the
  segment, ``<id>_<start:06d>_<end:06d>.mp4``: that file IS the segment, so its row has no
  ``start``/``end`` (read as offsets into the 10-s clip they would select its last frame, or cut
  its first seconds).  The trimmed name wins when both are on disk.  A trimmed clip a mirror names
  by bare id cannot be told apart here: :func:`madapter.data.sampling.segment_bounds` then uses the
  whole video, because it is not clearly longer than the segment.
- SSv2: ``labels.json`` maps a template (with ``[something]`` brackets removed) to a string index;
  ``train.json`` / ``validation.json`` hold ``{"id", "template", ...}``.
- list / synthetic: MMAction2 lists ``relative/path label`` (path may contain spaces).

A test split whose labels are withheld (SSv2, Kinetics-700 test) is replaced by the labelled
validation split, and the table says so (``test_from = "val"``).
"""

from __future__ import annotations

import csv
import json
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from madapter.data.index.schema import SPLITS, Row

if TYPE_CHECKING:
    from madapter.config import DatasetSection

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = {".avi", ".mp4", ".webm", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".ogv"}


@dataclass
class IndexTable:
    classes: list[str]
    rows: dict[str, list[Row]] = field(default_factory=lambda: {s: [] for s in SPLITS})
    missing: list[str] = field(default_factory=list)
    """Listed videos not found on disk (relative paths as listed)."""
    notes: list[str] = field(default_factory=list)
    test_from: str = "test"


class LayoutError(ValueError):
    """The raw directory does not look like the dataset's official layout."""


def _read_lines(path: Path) -> list[str]:
    """Non-empty lines without CRLF / trailing blanks (UCF101's lists use CRLF)."""
    return [ln.strip() for ln in path.read_text(encoding="utf-8", errors="surrogateescape").splitlines() if ln.strip()]


class _DiskIndex:
    """Where files really are below ``raw``: exact, case-insensitive and by file stem."""

    def __init__(self, raw: Path):
        self.by_rel: dict[str, str] = {}
        self.by_lower: dict[str, str] = {}
        self.by_stem: dict[str, str] = {}
        for p in sorted(raw.rglob("*")):  # sorted: the first of two same-stem files wins on every file system
            if p.suffix.lower() not in VIDEO_SUFFIXES or not p.is_file():
                continue
            rel = p.relative_to(raw).as_posix()
            if rel.startswith(".downloads/"):
                continue
            self.by_rel[rel] = rel
            self.by_lower.setdefault(rel.lower(), rel)
            self.by_stem.setdefault(p.stem, rel)

    def find_below(self, listed: str, roots: Iterable[str]) -> str | None:
        """``listed`` (as written in a split file) under one of ``roots``, exact first, then ignoring case."""
        for root in roots:
            rel = f"{root}/{listed}" if root else listed
            if rel in self.by_rel:
                return rel
        for root in roots:
            rel = f"{root}/{listed}" if root else listed
            if rel.lower() in self.by_lower:
                return self.by_lower[rel.lower()]
        return None


def _find_one(raw: Path, pattern: str, what: str) -> Path:
    found = sorted(p for p in raw.rglob(pattern) if ".downloads" not in p.parts)
    if not found:
        raise LayoutError(f"{raw}: no {pattern} found ({what}); run the download stage or fix dataset.source")
    return found[0]


def _video_roots(disk: _DiskIndex, class_dirs: Iterable[str]) -> list[str]:
    """Directories (relative to raw) that hold the class folders, most likely first."""
    wanted = {c.lower() for c in class_dirs}
    counts: dict[str, int] = {}
    for rel in disk.by_rel:
        parts = rel.split("/")
        if len(parts) >= 2 and parts[-2].lower() in wanted:
            root = "/".join(parts[:-2])
            counts[root] = counts.get(root, 0) + 1
    return sorted(counts, key=lambda r: (-counts[r], r)) or [""]  # ties by name, not by directory order


# --------------------------------------------------------------------------- UCF101


def ucf101(raw: Path, fold: int) -> IndexTable:
    class_ind = _find_one(raw, "classInd.txt", "UCF101 split zip")
    ann = class_ind.parent
    classes: list[str] = []
    for line in _read_lines(class_ind):
        num, name = line.split(maxsplit=1)
        if int(num) != len(classes) + 1:
            raise LayoutError(f"{class_ind}: class numbers must run 1, 2, 3, ... (got {num} at line {len(classes) + 1})")
        classes.append(name)
    by_folder = {c.lower(): i for i, c in enumerate(classes)}
    table = IndexTable(classes=classes)
    disk = _DiskIndex(raw)
    roots = _video_roots(disk, classes)
    for split, listname in (("train", f"trainlist{fold:02d}.txt"), ("test", f"testlist{fold:02d}.txt")):
        list_file = ann / listname
        if not list_file.is_file():
            raise LayoutError(f"{list_file}: missing (UCF101 split files for fold {fold})")
        for line in _read_lines(list_file):
            listed = line.split()[0]
            folder = listed.split("/")[0]
            if folder.lower() not in by_folder:
                raise LayoutError(f"{list_file}: '{listed}' is in folder '{folder}', which classInd.txt does not list")
            label = by_folder[folder.lower()]
            rel = disk.find_below(listed, roots)
            if rel is None:
                table.missing.append(listed)
                continue
            table.rows[split].append(Row(rel, label, classes[label], split))
    table.notes.append("UCF101 has no official val split: val.csv is empty, validate on test.csv")
    return table


# --------------------------------------------------------------------------- HMDB51

_HMDB_SPLIT = re.compile(r"^(?P<cls>.+)_test_split(?P<fold>[123])\.txt$")
_HMDB_TAGS = {"1": "train", "2": "test"}


def hmdb51(raw: Path, fold: int) -> IndexTable:
    split_files = sorted(p for p in raw.rglob(f"*_test_split{fold}.txt") if ".downloads" not in p.parts)
    if not split_files:
        raise LayoutError(f"{raw}: no *_test_split{fold}.txt found (HMDB51 test_train_splits.rar)")
    per_class = {_HMDB_SPLIT.match(p.name)["cls"]: p for p in split_files if _HMDB_SPLIT.match(p.name)}
    classes = sorted(per_class)
    table = IndexTable(classes=classes)
    disk = _DiskIndex(raw)
    roots = _video_roots(disk, classes)
    for label, cls in enumerate(classes):
        for line in _read_lines(per_class[cls]):
            name, tag = line.rsplit(maxsplit=1)
            split = _HMDB_TAGS.get(tag)
            if split is None:
                continue  # tag 0: not used in this fold
            rel = disk.find_below(f"{cls}/{name}", roots)
            if rel is None:
                table.missing.append(f"{cls}/{name}")
                continue
            table.rows[split].append(Row(rel, label, cls, split))
    table.notes.append("HMDB51 has no official val split: val.csv is empty, validate on test.csv")
    return table


# --------------------------------------------------------------------------- Kinetics

_KINETICS_CSVS = {"train": ("train.csv", "train.txt"), "val": ("val.csv", "validate.csv", "val.txt"), "test": ("test.csv",)}


def _kinetics_csv(raw: Path, split: str) -> Path | None:
    for name in _KINETICS_CSVS[split]:
        found = sorted(p for p in raw.rglob(name) if ".downloads" not in p.parts and "annotations" in p.parts)
        if found:
            return found[0]
    return None


def _read_kinetics(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if rows and not {"youtube_id", "time_start", "time_end"} <= set(rows[0]):
        raise LayoutError(f"{path}: expected columns label,youtube_id,time_start,time_end (got {list(rows[0])})")
    return rows


def kinetics(raw: Path, fold: int) -> IndexTable:
    csvs = {split: _kinetics_csv(raw, split) for split in SPLITS}
    if csvs["train"] is None:
        raise LayoutError(f"{raw}/annotations: no train.csv (Kinetics annotations); run the download stage")
    records = {split: _read_kinetics(path) if path else [] for split, path in csvs.items()}
    classes = sorted({r["label"] for r in records["train"] if r.get("label")})
    label_of = {c: i for i, c in enumerate(classes)}
    table = IndexTable(classes=classes)
    disk = _DiskIndex(raw)
    for split, rows in records.items():
        unlabeled = 0
        for r in rows:
            name = r.get("label") or ""
            if name not in label_of:
                unlabeled += 1
                continue
            start, end = int(float(r["time_start"])), int(float(r["time_end"]))
            stem = f"{r['youtube_id']}_{start:06d}_{end:06d}"
            if (rel := disk.by_stem.get(stem)) is not None:
                bounds: tuple[float | None, float | None] = (None, None)  # CVDF's trimmed clip IS the segment
            elif (rel := disk.by_stem.get(r["youtube_id"])) is not None:
                bounds = (float(start), float(end))  # a full-length download: the CSV's seconds are offsets in it
            else:
                table.missing.append(f"{split}/{stem}.mp4")
                continue
            table.rows[split].append(Row(rel, label_of[name], name, split, *bounds))
        if unlabeled:
            table.notes.append(f"{split}: {unlabeled} rows without a known label skipped")
    _test_from_val_if_unlabelled(table, "Kinetics test labels not available")
    return table


def _test_from_val_if_unlabelled(table: IndexTable, why: str) -> None:
    if not table.rows["test"] and table.rows["val"]:
        table.rows["test"] = [Row(r.path, r.label, r.label_name, "test", r.start, r.end) for r in table.rows["val"]]
        table.test_from = "val"
        table.notes.append(f"{why}: test.csv repeats the validation split")


# --------------------------------------------------------------------------- Something-Something v2


def ssv2_template(template: str) -> str:
    """``Putting [something] on [something]`` -> ``Putting something on something`` (labels.json's keys)."""
    return template.replace("[", "").replace("]", "")


def ssv2(raw: Path, fold: int) -> IndexTable:
    labels_file = _find_one(raw, "labels.json", "SSv2 labels")
    labels: dict[str, str] = json.loads(labels_file.read_text(encoding="utf-8"))
    classes = [name for name, _ in sorted(labels.items(), key=lambda kv: int(kv[1]))]
    if [int(v) for v in sorted(labels.values(), key=int)] != list(range(len(classes))):
        raise LayoutError(f"{labels_file}: indices must be 0..{len(classes) - 1} without gaps")
    table = IndexTable(classes=classes)
    disk = _DiskIndex(raw)
    for split, name in (("train", "train.json"), ("val", "validation.json"), ("test", "test.json")):
        path = labels_file.parent / name
        if not path.is_file():
            continue
        for item in json.loads(path.read_text(encoding="utf-8")):
            if "template" not in item:
                continue  # the official test.json carries ids only
            key = ssv2_template(item["template"])
            if key not in labels:
                raise LayoutError(f"{path}: template '{item['template']}' (id {item['id']}) is not in labels.json")
            rel = disk.by_stem.get(str(item["id"]))
            if rel is None:
                table.missing.append(f"{item['id']}.webm")
                continue
            label = int(labels[key])
            table.rows[split].append(Row(rel, label, classes[label], split))
    _test_from_val_if_unlabelled(table, "SSv2 test labels are withheld")
    return table


# --------------------------------------------------------------------------- MMAction2-style list


def list_layout(raw: Path, classes_file: Path | None = None) -> IndexTable:
    """``train.txt`` / ``val.txt`` / ``test.txt`` with ``relative/path label`` lines; optional ``classes.txt``."""
    if not (raw / "train.txt").is_file():
        raise LayoutError(f"{raw}/train.txt: missing (list layout: lines 'relative/path.mp4 <label>')")
    parsed: dict[str, list[tuple[str, int]]] = {s: [] for s in SPLITS}
    for split in SPLITS:
        path = raw / f"{split}.txt"
        if not path.is_file():
            continue
        for n, line in enumerate(_read_lines(path), 1):
            rel, _, label = line.rpartition(" ")
            if not rel or not label.lstrip("-").isdigit() or int(label) < 0:
                raise LayoutError(f"{path}:{n}: expected 'relative/path <non-negative int label>', got '{line}'")
            parsed[split].append((rel.strip(), int(label)))
    names_path = classes_file or raw / "classes.txt"
    num = 1 + max((lab for rows in parsed.values() for _, lab in rows), default=-1)
    if names_path.is_file():
        classes = _read_lines(names_path)
        if len(classes) < num:
            raise LayoutError(f"{names_path}: names {len(classes)} classes but the lists use label {num - 1}")
    else:
        classes = [str(i) for i in range(num)]
    table = IndexTable(classes=classes)
    for split, rows in parsed.items():
        for rel, label in rows:
            if not (raw / rel).is_file():
                table.missing.append(rel)
                continue
            table.rows[split].append(Row(rel, label, classes[label], split))
    if not (raw / "val.txt").is_file():
        table.notes.append("no val.txt: val.csv is empty, validate on test.csv")
    return table


# --------------------------------------------------------------------------- dispatch

Adapter = Callable[[Path, "DatasetSection"], IndexTable]


def _official(parse: Callable[[Path, int], IndexTable]) -> Adapter:
    """An official layout, given ``dataset.fold`` (UCF101 / HMDB51 have three folds; the others ignore it)."""
    return lambda raw, dataset: parse(raw, dataset.fold)


def _listed(raw: Path, dataset: DatasetSection) -> IndexTable:
    """The list layout (also what the synthetic generator writes), names from ``dataset.classes_file``."""
    return list_layout(raw, dataset.classes_file)


ADAPTERS: dict[str, Adapter] = {
    "ucf101": _official(ucf101),
    "hmdb51": _official(hmdb51),
    "kinetics400": _official(kinetics),
    "kinetics600": _official(kinetics),
    "kinetics700": _official(kinetics),
    "ssv2": _official(ssv2),
    "list": _listed,
    "synthetic": _listed,
}
"""``dataset.name`` -> parser of its raw directory: the one way the index stage picks a layout."""
