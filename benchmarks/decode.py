"""Decode throughput: decord sparse 8-frame sampling vs. PyAV decode-everything-then-index.

Both paths read the SAME generated h264 mp4 files in one run and return the same 8 frames (the
centred TSN grid); we count clips per second.  decord only converts (and, across key frames,
only decodes) what it needs; the PyAV baseline decodes and converts every frame, which is what a
naive loader does.  Two GOP settings are measured because decord's seeking can only skip
decoding when there are key frames to seek to (x264's default ``keyint`` is 250).

Runs::

    .venv/bin/python benchmarks/decode.py              # ~20 s; benchmarks/results/decode.{json,png,md}
    .venv/bin/python benchmarks/decode.py --quick      # ~10 s: 3 videos instead of 6, same quantities
    .venv/bin/python benchmarks/decode.py --smoke --out /tmp/decode.json   # seconds: checks the script works
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from provenance import provenance, write_outputs  # benchmarks/provenance.py
from tqdm import tqdm

logger = logging.getLogger("benchmarks.decode")
REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PACKAGES = ("decord", "av", "numpy", "torch")
"""Versions recorded with the results."""
TARGET_SPEEDUP = 2.0
"""Issue target: decord's sparse sampling at least 2x the decode-everything baseline, at every GOP."""
FULL: dict[str, Any] = {"videos": 6, "frames": 150, "width": 320, "height": 240, "gops": [250, 12], "num_frames": 8,
                        "repeats": 3}
"""The report's settings: 150 frames per video (UCF101 averages ~186), 320x240 like UCF101."""
PROFILES: dict[str, dict[str, Any]] = {
    "full": FULL,
    "quick": {**FULL, "videos": 3},  # same content, GOPs and repeats; half the files
    "smoke": {**FULL, "videos": 2, "frames": 24, "width": 96, "height": 64, "repeats": 1},  # the test's, not a result
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (the contract: one line on stderr naming the flag, exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


# ----------------------------------------------------------------------------- measurement
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
    """``count`` h264 videos with a key frame every ``gop`` frames (same seed: same content for every GOP)."""
    from madapter.data.acquire.synthetic import encode_video

    rng = np.random.default_rng(0)
    return [encode_video(folder / f"gop{gop}_{i:02d}.mp4", moving_texture(rng, frames, height, width), fps=25,
                         options={"g": str(gop), "crf": "23", "preset": "veryfast"}) for i in range(count)]


def decord_clip(path: Path, num_frames: int) -> np.ndarray:
    """What the loaders do: open with decord, seek and convert only the clip's frames."""
    from madapter.data.sampling import segment_indices
    from madapter.data.video import DecordVideo

    video = DecordVideo(path, num_threads=1)
    return video.get_frames(segment_indices(video.num_frames, num_frames, train=False))


def pyav_clip(path: Path, num_frames: int) -> np.ndarray:
    """The naive baseline: decode and convert every frame with PyAV, then index the clip's frames."""
    from madapter.data.sampling import segment_indices
    from madapter.data.video import PyAVVideo

    everything = PyAVVideo(path).decode_all()
    return everything[segment_indices(len(everything), num_frames, train=False)]


def interleaved_rates(loaders: dict[str, Callable[[Path, int], np.ndarray]], paths: list[Path], num_frames: int,
                      repeats: int) -> dict[str, float]:
    """Clips/s of every loader: per video its fastest of ``repeats`` tries, summed over the videos.

    The loaders take turns video by video (who goes first alternates), so a neighbour's burst on a
    shared machine hits both alike instead of one loader's whole pass.
    """
    names = list(loaders)
    best = {name: np.full(len(paths), np.inf) for name in names}
    for rep in range(repeats):
        for i, path in enumerate(paths):
            for name in names if (rep + i) % 2 == 0 else names[::-1]:
                started = time.perf_counter()
                loaders[name](path, num_frames)
                best[name][i] = min(best[name][i], time.perf_counter() - started)
    return {name: len(paths) / float(t.sum()) for name, t in best.items()}


def measure_gop(folder: Path, gop: int, s: dict[str, Any]) -> dict[str, Any]:
    """One point: both loaders on the same files encoded with key frames every ``gop`` frames."""
    paths = make_videos(folder, s["videos"], s["frames"], s["height"], s["width"], gop)
    diff = float(np.mean([np.abs(decord_clip(p, s["num_frames"]).astype(int)
                                 - pyav_clip(p, s["num_frames"]).astype(int)).mean() for p in paths]))
    rates = interleaved_rates({"decord": decord_clip, "pyav": pyav_clip}, paths, s["num_frames"], s["repeats"])
    dec, pav = rates["decord"], rates["pyav"]
    logger.info("gop %d: decord %.1f clips/s, PyAV decode-all %.1f clips/s -> %.2fx (pixel diff %.2f)",
                gop, dec, pav, dec / pav, diff)
    return {"gop": gop, "decord_clips_per_s": round(dec, 2), "pyav_clips_per_s": round(pav, 2),
            "speedup": round(dec / pav, 2), "mean_abs_pixel_diff": round(diff, 3)}


def last_line(err: BaseException) -> str:
    """The error's type and last message line: what the JSON and the table show for a failed point."""
    lines = [line for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {lines[-1].strip() if lines else ''}"


def headline(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The numbers the docs' prose quotes: speed-up per GOP, the verdict against the target, pixel agreement."""
    ok = [r for r in rows if "error" not in r]
    smallest = min((r["speedup"] for r in ok), default=None)
    return {
        "speedup_by_gop": {str(r["gop"]): r["speedup"] for r in ok},
        "min_speedup": smallest, "max_speedup": max((r["speedup"] for r in ok), default=None),
        "target_speedup": TARGET_SPEEDUP,
        "target_met": smallest is not None and len(ok) == len(rows) and smallest >= TARGET_SPEEDUP,
        "max_mean_abs_pixel_diff": max((r["mean_abs_pixel_diff"] for r in ok), default=None),
    }


def run(settings: dict[str, Any]) -> dict[str, Any]:
    """Every GOP in turn; a failing GOP is recorded with its last error line and the rest still runs."""
    import torch

    torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="madapter-decode-bench-") as tmp:
        for gop in tqdm(settings["gops"], desc="GOP settings", unit="gop"):
            try:
                rows.append(measure_gop(Path(tmp), gop, settings))
            except Exception as err:  # noqa: BLE001 - one failing point must not lose the others
                logger.error("gop %d failed: %s", gop, err)
                rows.append({"gop": gop, "error": last_line(err)})
    return {"results": rows, "headline": headline(rows)}


# ----------------------------------------------------------------------------- report (pure)
def markdown(report: dict[str, Any], json_path: str) -> str:
    """The table of docs/benchmarks.md's "Decoding" section, from the report alone."""
    s, h = report["settings"], report["headline"]
    lines = [
        "| GOP (key-frame interval) | decord sparse `get_batch` | PyAV decode-all-then-index | speed-up | "
        "pixel difference |",
        "|---|---|---|---|---|",
    ]
    for r in report["results"]:
        label = f"{r['gop']}" + (" (x264 default)" if r["gop"] == 250 else "")
        if "error" in r:
            lines.append(f"| {label} | failed: {r['error']} | | | |")
            continue
        lines.append(f"| {label} | {r['decord_clips_per_s']:.1f} clips/s | {r['pyav_clips_per_s']:.1f} clips/s | "
                     f"**{r['speedup']:.2f}x** | {r['mean_abs_pixel_diff']:.2f} |")
    verdict = "met" if h["target_met"] else "NOT met"
    lines += [
        "",
        f"{s['videos']} videos, {s['width']}x{s['height']}, {s['frames']} frames, {s['codec']}, clips of "
        f"{s['num_frames']} frames, {s['threads']}, per video the fastest of {s['repeats']} tries, loaders taking turns. Target: decord >= "
        f"{h['target_speedup']:.0f}x at every GOP: {verdict} (smallest speed-up {_x(h['min_speedup'])}).",
        "",
        footer(report, json_path),
    ]
    return "\n".join(lines) + "\n"


def footer(report: dict[str, Any], json_path: str) -> str:
    """The line naming the JSON, the commit and the exact command (every table traces to its run)."""
    git, m = report["git"], report["machine"]
    return (f"From `{json_path}`, commit `{(git['commit'] or '?')[:10]}`{' (uncommitted edits)' if git['dirty'] else ''}, "
            f"`{report['command']}`, {report['seconds_total']:.0f} s; load average {m['load_avg_1m_start']:.1f} at the "
            f"start, {m['load_avg_1m_end']:.1f} at the end.")


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def plot(report: dict[str, Any], path: Path) -> None:
    """clips/s of both loaders per GOP, the speed-up written on decord's bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in report["results"] if "error" not in r]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar(x - 0.2, [r["decord_clips_per_s"] for r in rows], 0.4, label="decord sparse")
    ax.bar(x + 0.2, [r["pyav_clips_per_s"] for r in rows], 0.4, label="PyAV decode-all")
    for i, r in enumerate(rows):
        ax.text(i - 0.2, r["decord_clips_per_s"], f"{r['speedup']}x", ha="center", va="bottom")
    ax.set_xticks(x, [f"GOP {r['gop']}" for r in rows])
    ax.set_ylabel("clips / s (1 thread)")
    s = report["settings"]
    ax.set_title(f"{s['num_frames']}-frame clips, {s['width']}x{s['height']}, {s['frames']} frames per video")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- driver
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="reduced settings: 3 videos instead of 6 (same quantities)")
    mode.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # tests: seconds, numbers meaningless
    parser.add_argument("--out", type=Path, default=RESULTS / "decode.json", help="JSON path (.png, .md beside it)")
    args = parser.parse_args(argv)
    if args.out.suffix != ".json":
        parser.error(f"--out {args.out} must end in .json (the .png and .md are written beside it)")
    return args


def main(argv: list[str] | None = None) -> int:
    started, load_start = time.perf_counter(), os.getloadavg()
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    configuration = "smoke" if args.smoke else "quick" if args.quick else "full"
    settings = {**PROFILES[configuration], "configuration": configuration, "codec": "h264 yuv420p (libx264 crf 23)",
                "threads": "1 decoder thread"}
    result = run(settings)
    report = {"benchmark": "decode", "settings": settings, **result, "target_speedup": TARGET_SPEEDUP,
              **provenance(load_start, PACKAGES, quick=args.quick, started=started)}
    write_outputs(report, args.out.resolve(), plot, markdown)
    return 1 if any("error" in r for r in result["results"]) else 0


if __name__ == "__main__":
    sys.exit(main())
