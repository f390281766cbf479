"""The real-material set of the recipe checks (``python -m benchmarks.real_set``): the arrow-of-time
variant is the real footage played both ways, a reversal pair per clip."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.real_set import SEGMENT_CLIPS, write_segment_dataset
from madapter.data.video import PyAVVideo


def test_arrow_of_time_classes_are_each_clip_forward_and_reversed(real_material, tmp_path: Path) -> None:
    arrow = write_segment_dataset(real_material.clips_dir, tmp_path / "arrow", arrow_of_time=True)
    classes = (tmp_path / "arrow" / "classes.txt").read_text().split()
    assert classes == [Path(n).stem + s for n in SEGMENT_CLIPS for s in ("", "_reversed")]
    for split, paths in arrow.items():
        rows = [line.split() for line in (tmp_path / "arrow" / f"{split}.txt").read_text().splitlines()]
        assert [rel for rel, _ in rows] == paths and all(classes[int(label)] == Path(rel).parent.name for rel, label in rows)
        forward = sorted(rel for rel, label in rows if int(label) % 2 == 0)
        reversed_ = sorted(rel.replace("_reversed/", "/") for rel, label in rows if int(label) % 2 == 1)
        assert forward == reversed_ and len(forward) >= len(SEGMENT_CLIPS)  # every segment in both directions
    # a segment and its reversal: the same frames (up to h264's re-encoding), in the opposite order
    forward, backward = (PyAVVideo(tmp_path / "arrow" / f"basketball{s}" / "seg00.mp4").decode_all().astype(np.int16)
                         for s in ("", "_reversed"))
    assert forward.shape == backward.shape and len(forward) > 20
    assert np.abs(forward - backward[::-1]).mean() < 3.0
    assert np.abs(forward - backward).mean() > 3 * np.abs(forward - backward[::-1]).mean()  # not a static shot
