"""A small ``list`` dataset cut from the real clips: 1-s segments, the clip each came from as its class.

Segments are re-encoded with PyAV (h264 mp4, the source's own size and rate): their pixels are the
real footage, their container is ours.  Train takes each clip's first segments, test its last ones,
so every test segment is footage the model never saw, later in the same shot.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from madapter.data.video import PyAVVideo

SEGMENT_CLIPS = ("v_SoccerJuggling_g23_c01.avi", "v_SoccerJuggling_g24_c01.avi", "R6llTwEh07w.mp4",
                 "SOX5yA1l24A.mp4", "WUzgd7C1pWA.mp4", "basketball.mp4")
"""The clips long enough (8-11 s) to give several segments each."""
TRAIN_FRACTION = 0.6


def _write_mp4(path: Path, frames: np.ndarray, fps: float) -> None:
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.height, stream.width = frames.shape[1] // 2 * 2, frames.shape[2] // 2 * 2
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "20", "preset": "veryfast"}
        for frame in frames:
            image = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[: stream.height, : stream.width]), format="rgb24")
            for packet in stream.encode(image):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_segment_dataset(clips_dir: Path, root: Path, seconds: float = 1.0) -> dict[str, list[str]]:
    """Write ``root/{train,test}.txt`` + ``classes.txt`` + the segment files; returns split -> paths."""
    root.mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[str]] = {"train": [], "test": []}
    lines: dict[str, list[str]] = {"train": [], "test": []}
    for label, name in enumerate(SEGMENT_CLIPS):
        video = PyAVVideo(clips_dir / name)
        frames = video.decode_all()
        per_segment = int(round(video.fps * seconds))
        count = len(frames) // per_segment
        for k in range(count):
            rel = f"{Path(name).stem}/seg{k:02d}.mp4"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            _write_mp4(root / rel, frames[k * per_segment:(k + 1) * per_segment], video.fps)
            split = "train" if k < round(count * TRAIN_FRACTION) else "test"
            splits[split].append(rel)
            lines[split].append(f"{rel} {label}")
    for split, rows in lines.items():
        (root / f"{split}.txt").write_text("\n".join(rows) + "\n")
    (root / "classes.txt").write_text("\n".join(Path(n).stem for n in SEGMENT_CLIPS) + "\n")
    return splits
