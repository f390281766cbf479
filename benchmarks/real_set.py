"""The real-material set: a small ``list`` dataset cut from the real clips, with the real weights.

The real-material test tier trains and evaluates on it, and the recipe checks measure on it
(``benchmarks/results/recipe_real.md``): 1-s segments of the real clips, the clip each came from as
its class, and the real ImageNet EfficientNet-Lite0 weights under timm's names.

Segments are re-encoded with PyAV (h264 mp4, the source's own size and rate): their pixels are the
real footage, their container is ours.  Train takes each clip's first segments, test its last ones,
so every test segment is footage the model never saw, later in the same shot.

    python -m benchmarks.real_set DIR        # DIR/params.yaml, then:
    python -m madapter features --params DIR/params.yaml
    python -m benchmarks.recipe_sweep --params DIR/params.yaml --recipes ... --baseline ...
"""

from __future__ import annotations

import argparse
import logging
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
import yaml

from benchmarks.real_material import ensure_material
from madapter.data.video import PyAVVideo

logger = logging.getLogger("real_set")

LITE0 = "tf_efficientnet_lite0"
"""The timm architecture the real weights belong to (efficientnet-pytorch's ``efficientnet-lite0``)."""

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


def write_segment_dataset(clips_dir: Path, root: Path, seconds: float = 1.0,
                          arrow_of_time: bool = False) -> dict[str, list[str]]:
    """Write ``root/{train,test}.txt`` + ``classes.txt`` + the segment files; returns split -> paths.

    ``arrow_of_time``: every segment also played backwards, and the class is the clip AND the
    direction (``<clip>`` / ``<clip>_reversed``, consecutive labels: a reversal pair per clip).  A clip
    and its reversal hold the same frames, so only frame order tells them apart: an order-blind model
    scores 0.5 on every pair.  Real motion (a ball falling, a juggler's kick) through real weights.
    """
    root.mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[str]] = {"train": [], "test": []}
    lines: dict[str, list[str]] = {"train": [], "test": []}
    directions = ("", "_reversed") if arrow_of_time else ("",)
    for clip, name in enumerate(SEGMENT_CLIPS):
        video = PyAVVideo(clips_dir / name)
        frames = video.decode_all()
        per_segment = int(round(video.fps * seconds))
        count = len(frames) // per_segment
        for k in range(count):
            segment = frames[k * per_segment:(k + 1) * per_segment]
            split = "train" if k < round(count * TRAIN_FRACTION) else "test"
            for d, suffix in enumerate(directions):
                rel = f"{Path(name).stem}{suffix}/seg{k:02d}.mp4"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                _write_mp4(root / rel, segment[::-1] if suffix else segment, video.fps)
                splits[split].append(rel)
                lines[split].append(f"{rel} {clip * len(directions) + d}")
    for split, rows in lines.items():
        (root / f"{split}.txt").write_text("\n".join(rows) + "\n")
    classes = [Path(n).stem + suffix for n in SEGMENT_CLIPS for suffix in directions]
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    return splits


def lite0_in_timm_names(source: Path, target: Path) -> Path:
    """The real weights renamed to timm's ``tf_efficientnet_lite0`` keys, as a user converting them would.

    efficientnet-pytorch and timm list the same tensors in the same order: pair them in order and
    check every shape.  BatchNorm's ``num_batches_tracked`` counters are left out, as TF ports and
    older torchvision files lack them (the backbone loader must accept that).
    """
    import timm

    src = [(k, v) for k, v in torch.load(source, map_location="cpu", weights_only=True).items()
           if not k.endswith("num_batches_tracked")]
    own = [(k, v) for k, v in timm.create_model(LITE0).state_dict().items() if not k.endswith("num_batches_tracked")]
    if len(src) != len(own):
        raise AssertionError(f"{source}: {len(src)} tensors, timm {LITE0} has {len(own)}")
    for (sk, sv), (tk, tv) in zip(src, own, strict=True):
        if sv.shape != tv.shape:
            raise AssertionError(f"{source}: {sk} {list(sv.shape)} does not pair with timm {tk} {list(tv.shape)}")
    torch.save({tk: sv.clone() for (_, sv), (tk, _) in zip(src, own, strict=True)}, target)
    return target


def recipe_check_params(root: Path, weights: Path) -> dict[str, Any]:
    """The params of the recipe checks: Lite0 at 112 px on 4 of 8 stored frames, full grids cached
    (``benchmarks.recipe_sweep`` pools them per recipe), 25 epochs; CPU-sized."""
    return {
        "base": {"seed": 0, "data_dir": str(root / "data"), "outputs_dir": str(root / "outputs")},
        "dataset": {"name": "list", "list_root": str(root / "segments")},
        "scan": {"workers": 1},
        "decode": {"workers": 1, "frames_per_video": 8, "size": 128, "shard_size": 64, "format": "jpeg"},
        "features": {"train_views": 4, "batch_size": 8, "dtype": "float16"},
        "model": {"backbone": LITE0, "weights_file": str(weights), "img_size": 112, "num_frames": 4, "width": 64,
                  "level_pool": None},
        "train": {"source": "features", "epochs": 25, "batch_size": 8, "lr": 3e-3, "num_workers": 1},
        "evaluate": {"clips": 1, "crops": 1, "batch_size": 8, "loader_workers": 0},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the real-material set and its params file into DIR.")
    parser.add_argument("root", type=Path, help="a directory outside the repository (the clips are never committed)")
    parser.add_argument("--arrow-of-time", action="store_true",
                        help="classes are clip x direction (each segment also reversed): an order-dependent real set")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.root.mkdir(parents=True, exist_ok=True)
    material = ensure_material()
    weights = lite0_in_timm_names(material.lite0_weights, args.root / "lite0_timm.pth")
    splits = write_segment_dataset(material.clips_dir, args.root / "segments", arrow_of_time=args.arrow_of_time)
    params = args.root / "params.yaml"
    params.write_text(yaml.safe_dump(recipe_check_params(args.root, weights), sort_keys=False))
    logger.info("%s: %s segments; next: python -m madapter features --params %s", params,
                " / ".join(f"{len(v)} {k}" for k, v in splits.items()), params)
    return 0


if __name__ == "__main__":
    sys.exit(main())
