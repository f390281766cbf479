"""Which videos evaluation scores, decided once: ``evaluate`` and the ``features`` stage both ask here.

The evaluated videos of a split are those the frame store kept (scan's quarantine and decode's
failures already left out), in INDEX order, each read from its SOURCE file in the raw directory
with the index's segment bounds.  :mod:`madapter.evaluate` decodes their protocol views;
:mod:`madapter.data.features.stage` stores the frozen backbone's outputs of the same views in
the same order, so evaluating on cached features scores exactly the videos evaluating on frames
does.  Which split is evaluated is the index's business (:func:`madapter.data.index.schema.eval_split`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from madapter.data.index.schema import read_index
from madapter.data.store.frame_store import FrameStore
from madapter.paths import StagePaths


@dataclass(frozen=True)
class EvaluatedVideo:
    """One video to evaluate."""

    path: str
    """Relative to the raw directory: the index's and the frame store's key for it."""
    label: int
    label_name: str
    """As the frame store records it."""
    source: str
    """Absolute path of the source video (``os.fsdecode``: file names need not be valid UTF-8)."""
    start: float | None = None
    end: float | None = None


def evaluated_videos(paths: StagePaths, split: str) -> list[EvaluatedVideo]:
    """``split``'s videos to evaluate: the index's rows the frame store holds, in index order, from the source."""
    store = FrameStore(paths.frames, split)
    names = dict(zip(store.paths, store.label_names, strict=True))
    raw = paths.raw.resolve()
    return [EvaluatedVideo(row.path, row.label, names[row.path], os.fsdecode(raw / row.path), row.start, row.end)
            for row in read_index(paths.index, split) if row.path in names]
