"""Kinetics rows carry ``start``/``end`` only when the file on disk is a FULL-LENGTH source video.

CVDF distributes clips already trimmed to ``[time_start, time_end)`` and named
``<id>_<start:06d>_<end:06d>.mp4``: such a file IS the segment, and the CSV's seconds are offsets
into the YouTube video, not into the clip.  Reading them as offsets into the 10-s clip made every
stored frame the clip's last one (start >= 10 s) or cut the first ``start`` seconds (start < 10 s).
A bare ``<id>.mp4`` (youtube-dl / yt-dlp naming of a full download) keeps the offsets.
"""

from __future__ import annotations

import csv
from pathlib import Path

from madapter.data.index.layouts import kinetics
from madapter.data.index.schema import read_index, write_split

HEADER = ["label", "youtube_id", "time_start", "time_end", "split", "is_cc"]


def _tree(raw: Path, rows: dict[str, list[tuple[str, str, int, int]]], files: dict[str, list[str]]) -> None:
    """``annotations/<split>.csv`` from ``rows`` and the (dummy) video files ``files[split]`` under ``<split>/``."""
    (raw / "annotations").mkdir(parents=True)
    for split, items in rows.items():
        with open(raw / "annotations" / f"{split}.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(HEADER)
            writer.writerows([label, vid, start, end, split, 0] for label, vid, start, end in items)
    for split, names in files.items():
        (raw / split).mkdir(parents=True, exist_ok=True)
        for name in names:
            (raw / split / name).write_bytes(b"v")


def test_trimmed_cvdf_clip_is_the_segment_and_a_bare_id_keeps_the_offsets(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    _tree(raw, {
        "train": [("abseiling", "late0000000", 14, 24),     # CVDF clip, start >= its 10 s length
                  ("abseiling", "early000000", 3, 13),      # CVDF clip, start < 10 s
                  ("archery", "-fullvideo0", 14, 24),       # full-length download named by id
                  ("archery", "both0000000", 30, 40)],      # both names on disk: the trimmed one wins
        "val": [("archery", "vAl0000000a", 415, 425)],
    }, {
        "train": ["late0000000_000014_000024.mp4", "early000000_000003_000013.mp4", "-fullvideo0.mp4",
                  "both0000000_000030_000040.mp4", "both0000000.mp4"],
        "val": ["vAl0000000a_000415_000425.mp4"],
    })
    table = kinetics(raw, fold=1)
    got = {r.path: (r.start, r.end) for r in table.rows["train"]}
    assert got == {
        "train/late0000000_000014_000024.mp4": (None, None),
        "train/early000000_000003_000013.mp4": (None, None),
        "train/-fullvideo0.mp4": (14.0, 24.0),
        "train/both0000000_000030_000040.mp4": (None, None),
    }
    assert [(r.path, r.start, r.end) for r in table.rows["val"]] == [("val/vAl0000000a_000415_000425.mp4", None, None)]
    # the withheld-test copy of val carries the same (empty) bounds
    assert table.test_from == "val"
    assert [(r.start, r.end) for r in table.rows["test"]] == [(None, None)]
    assert table.missing == []


def test_empty_bounds_survive_the_index_csv(tmp_path: Path) -> None:
    """What decode and evaluate read back: empty ``start``/``end`` cells, i.e. ``None``, for a trimmed clip."""
    raw = tmp_path / "raw"
    _tree(raw, {"train": [("abseiling", "late0000000", 14, 24), ("abseiling", "-fullvideo0", 5, 15)]},
          {"train": ["late0000000_000014_000024.mp4", "-fullvideo0.mp4"]})
    table = kinetics(raw, fold=1)
    write_split(tmp_path / "index", "train", table.rows["train"])
    text = (tmp_path / "index" / "train.csv").read_text().splitlines()
    assert "train/late0000000_000014_000024.mp4,0,abseiling,train,," in text
    assert "train/-fullvideo0.mp4,0,abseiling,train,5,15" in text
    rows = read_index(tmp_path / "index", "train")
    assert {(r.path, r.start, r.end) for r in rows} == {
        ("train/late0000000_000014_000024.mp4", None, None), ("train/-fullvideo0.mp4", 5.0, 15.0)}
