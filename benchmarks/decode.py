"""Decode throughput: decord sparse 8-frame sampling vs. PyAV decode-everything-then-index.

Both paths read the SAME generated h264 mp4 files in one run and return the same 8 frames (the
centred TSN grid); we count clips per second.  decord only converts (and, across key frames,
only decodes) what it needs; the PyAV baseline decodes and converts every frame, which is what a
naive loader does.  Two GOP settings are measured because decord's seeking can only skip
decoding when there are key frames to seek to (x264's default ``keyint`` is 250).

    .venv/bin/python benchmarks/decode.py            # writes benchmarks/results/decode.{json,png}
"""

from __future__ import annotations

import argparse
import logging
import platform
import tempfile
import time
from pathlib import Path

import av
import decord
import matplotlib
import numpy as np
import torch

from madapter.data.acquire.synthetic import encode_video
from madapter.data.sampling import segment_indices
from madapter.data.video import DecordVideo, PyAVVideo
from madapter.fileio import write_json_atomic

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

logger = logging.getLogger("benchmarks.decode")
RESULTS = Path(__file__).parent / "results"


def moving_texture(rng: np.random.Generator, frames: int, height: int, width: int) -> np.ndarray:
    """Camera-pan-like content: a smooth random texture sliding 2 px per frame plus a moving square.

    Compresses like real footage (every frame differs), unlike flat synthetic frames.
    """
    coarse = rng.integers(0, 256, (height // 8 + 2, (width + 2 * frames) // 8 + 2, 3), dtype=np.uint8)
    texture = np.kron(coarse, np.ones((8, 8, 1), dtype=np.uint8))
    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    for t in range(frames):
        out[t] = texture[:height, 2 * t : 2 * t + width]
        x = int((width - 40) * t / max(frames - 1, 1))
        out[t, height // 2 - 20 : height // 2 + 20, x : x + 40] = (250, 240, 30)
    return out


def make_videos(folder: Path, count: int, frames: int, height: int, width: int, gop: int) -> list[Path]:
    rng = np.random.default_rng(0)
    return [encode_video(folder / f"gop{gop}_{i:02d}.mp4", moving_texture(rng, frames, height, width), fps=25,
                         options={"g": str(gop), "crf": "23", "preset": "veryfast"}) for i in range(count)]


def decord_clip(path: Path, num_frames: int) -> np.ndarray:
    video = DecordVideo(path, num_threads=1)
    return video.get_frames(segment_indices(video.num_frames, num_frames, train=False))


def pyav_clip(path: Path, num_frames: int) -> np.ndarray:
    everything = PyAVVideo(path).decode_all()
    return everything[segment_indices(len(everything), num_frames, train=False)]


def clips_per_second(fn, paths: list[Path], num_frames: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for path in paths:
            fn(path, num_frames)
        best = min(best, time.perf_counter() - started)
    return len(paths) / best


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for gop in args.gops:
            paths = make_videos(Path(tmp), args.videos, args.frames, args.height, args.width, gop)
            diff = float(np.mean([np.abs(decord_clip(p, args.num_frames).astype(int)
                                         - pyav_clip(p, args.num_frames).astype(int)).mean() for p in paths]))
            dec = clips_per_second(decord_clip, paths, args.num_frames, args.repeats)
            pav = clips_per_second(pyav_clip, paths, args.num_frames, args.repeats)
            rows.append({"gop": gop, "decord_clips_per_s": round(dec, 2), "pyav_clips_per_s": round(pav, 2),
                         "speedup": round(dec / pav, 2), "mean_abs_pixel_diff": round(diff, 3)})
            logger.info("gop %d: decord %.1f clips/s, PyAV decode-all %.1f clips/s -> %.2fx (pixel diff %.2f)",
                        gop, dec, pav, dec / pav, diff)
    return {
        "benchmark": "decode throughput, 8-frame sparse (centred TSN) clips, same files, one run",
        "settings": {"videos": args.videos, "frames_per_video": args.frames, "resolution": f"{args.width}x{args.height}",
                     "codec": "h264 yuv420p (libx264 crf 23)", "clip_frames": args.num_frames, "repeats": args.repeats,
                     "threads": "1 per decoder"},
        "results": rows,
        "target_speedup": 2.0,
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                    "decord": decord.__version__, "av": av.__version__},
    }


def plot(result: dict, path: Path) -> None:
    rows = result["results"]
    labels = [f"GOP {r['gop']}" for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(x - 0.2, [r["decord_clips_per_s"] for r in rows], 0.4, label="decord sparse")
    ax.bar(x + 0.2, [r["pyav_clips_per_s"] for r in rows], 0.4, label="PyAV decode-all")
    for i, r in enumerate(rows):
        ax.text(i - 0.2, r["decord_clips_per_s"], f"{r['speedup']}x", ha="center", va="bottom")
    ax.set_xticks(x, labels)
    ax.set_ylabel("clips / s (1 thread)")
    ax.set_title(f"8-frame clips, {result['settings']['resolution']}, {result['settings']['frames_per_video']} frames")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--frames", type=int, default=150, help="frames per video (UCF101 averages ~186)")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--gops", type=int, nargs="+", default=[250, 12])
    parser.add_argument("--num-frames", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = run(args)
    write_json_atomic(args.out / "decode.json", result)
    plot(result, args.out / "decode.png")
    logger.info("wrote %s and %s", args.out / "decode.json", args.out / "decode.png")


if __name__ == "__main__":
    main()
