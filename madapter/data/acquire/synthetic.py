"""The built-in offline dataset: small, deterministic, real video files.

Why it looks like this: the M-adapter's claim is that its temporal modules make a frozen image
model sensitive to *motion*.  So half of the classes come in pairs whose videos are the same frames
in reverse order (a square moving right vs. left, growing vs. shrinking); a model that ignores frame
order cannot beat chance on them.  The other classes differ only in appearance (square vs. circle),
which any image model gets.  Videos are real H.264/yuv420p mp4 files written with PyAV, so the
whole pipeline (index -> scan -> decord decoding) runs on them exactly as on a downloaded dataset.

Layout written (the MMAction2-style "list" layout of the data contracts)::

    <root>/<class>/<class>_<i>.mp4
    <root>/train.txt  val.txt  test.txt   ("<relative path> <label>" lines)
    <root>/classes.txt                    (line i = name of label i)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from tqdm import tqdm

from madapter.config import SyntheticSection
from madapter.fileio import atomic_path, write_text_atomic

logger = logging.getLogger(__name__)

Frames = np.ndarray  # uint8 [T, H, W, 3]
Renderer = Callable[[np.random.Generator, int, int], Frames]


# ---------------------------------------------------------------------------------------- drawing
def _background(rng: np.random.Generator, size: int) -> Frames:
    """A random flat colour plus static low-amplitude texture (same in every frame)."""
    colour = rng.integers(30, 120, size=3)
    texture = rng.integers(-12, 13, size=(size, size, 1))
    return np.clip(colour[None, None, :] + texture, 0, 255).astype(np.uint8)


def _object_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(150, 256, size=3).astype(np.uint8)


def _draw_square(canvas: Frames, cx: float, cy: float, side: float, colour: np.ndarray) -> None:
    size = canvas.shape[0]
    half = side / 2
    x0, x1 = int(round(max(cx - half, 0))), int(round(min(cx + half, size)))
    y0, y1 = int(round(max(cy - half, 0))), int(round(min(cy + half, size)))
    canvas[y0:y1, x0:x1] = colour


def _draw_circle(canvas: Frames, cx: float, cy: float, diameter: float, colour: np.ndarray) -> None:
    size = canvas.shape[0]
    yy, xx = np.mgrid[0:size, 0:size]
    canvas[(xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= (diameter / 2) ** 2] = colour


def _translate(rng: np.random.Generator, num_frames: int, size: int, vertical: bool) -> Frames:
    """A square crossing the frame left->right (or top->bottom) at a random speed and lane."""
    bg, colour = _background(rng, size), _object_colour(rng)
    side = size * rng.uniform(0.2, 0.3)
    start = rng.uniform(side / 2, size * 0.35)
    stop = rng.uniform(size * 0.65, size - side / 2)
    lane = rng.uniform(side / 2 + 2, size - side / 2 - 2)
    frames = np.repeat(bg[None], num_frames, axis=0)
    for t, pos in enumerate(np.linspace(start, stop, num_frames)):
        cx, cy = (lane, pos) if vertical else (pos, lane)
        _draw_square(frames[t], cx, cy, side, colour)
    return frames


def _grow(rng: np.random.Generator, num_frames: int, size: int) -> Frames:
    """A square around a random centre growing from small to large."""
    bg, colour = _background(rng, size), _object_colour(rng)
    cx, cy = rng.uniform(size * 0.4, size * 0.6, size=2)
    small, large = size * rng.uniform(0.08, 0.15), size * rng.uniform(0.55, 0.75)
    frames = np.repeat(bg[None], num_frames, axis=0)
    for t, side in enumerate(np.linspace(small, large, num_frames)):
        _draw_square(frames[t], cx, cy, side, colour)
    return frames


def _still(shape: str) -> Renderer:
    """An object of one shape, random colour, jittering in place (appearance-only classes)."""

    def render(rng: np.random.Generator, num_frames: int, size: int) -> Frames:
        bg, colour = _background(rng, size), _object_colour(rng)
        extent = size * rng.uniform(0.3, 0.45)
        centre = rng.uniform(size * 0.35, size * 0.65, size=2)
        jitter = rng.uniform(-1.5, 1.5, size=(num_frames, 2))
        draw = _draw_square if shape == "square" else _draw_circle
        frames = np.repeat(bg[None], num_frames, axis=0)
        for t in range(num_frames):
            draw(frames[t], *(centre + jitter[t]), extent, colour)
        return frames

    return render


def _reversed(render: Renderer) -> Renderer:
    """The partner class: the very same kind of frames, played backwards."""

    def render_reversed(rng: np.random.Generator, num_frames: int, size: int) -> Frames:
        return render(rng, num_frames, size)[::-1].copy()

    return render_reversed


def _move_right(rng: np.random.Generator, n: int, s: int) -> Frames:
    return _translate(rng, n, s, vertical=False)


def _move_down(rng: np.random.Generator, n: int, s: int) -> Frames:
    return _translate(rng, n, s, vertical=True)


@dataclass(frozen=True)
class SyntheticClass:
    name: str
    render: Renderer
    differs_by: str
    """``"motion"`` (its partner has the same frames reversed) or ``"appearance"``."""


CATALOGUE: tuple[SyntheticClass, ...] = (
    SyntheticClass("move_right", _move_right, "motion"),
    SyntheticClass("move_left", _reversed(_move_right), "motion"),
    SyntheticClass("grow", _grow, "motion"),
    SyntheticClass("shrink", _reversed(_grow), "motion"),
    SyntheticClass("still_square", _still("square"), "appearance"),
    SyntheticClass("still_circle", _still("circle"), "appearance"),
    SyntheticClass("move_down", _move_down, "motion"),
    SyntheticClass("move_up", _reversed(_move_down), "motion"),
)
"""Ordered so that any prefix of even length keeps motion pairs together."""


def render_video(class_index: int, video_index: int, cfg: SyntheticSection, seed: int) -> Frames:
    """Frames of one synthetic video; a pure function of its arguments.

    A motion pair shares its random stream (keyed by the pair, not the class), so ``move_left``
    video *i* is exactly ``move_right`` video *i* reversed: the pair differs ONLY in frame order.
    """
    pair = class_index // 2 if CATALOGUE[class_index].differs_by == "motion" else class_index + 100
    rng = np.random.default_rng([seed, pair, video_index])
    return CATALOGUE[class_index].render(rng, cfg.num_frames, cfg.size)


# ---------------------------------------------------------------------------------------- encoding
X264_DETERMINISTIC = "threads=1:lookahead-threads=1:sliced-threads=0:cpu-independent=1"
"""x264 settings that make its output a pure function of the frames, on any machine.

``threads``/``lookahead-threads``/``sliced-threads``: one thread; x264's default is one per CPU,
and the bitstream depends on how frames and slices are split between threads.
``cpu-independent``: without it x264 picks CPU-specific SIMD algorithms (e.g. its 9-way intra
analysis, macroblock-tree propagation) whose results differ from the C code's; and it was not even
stable within one process: on this machine 7-9 of 24 synthetic videos (32 and 64 px) changed bytes
over 20 encodings of the same frames.  With it, plain C (``asm=0``), SSE2-only and AVX-512 runs
write identical bytes (tests/data_video/test_synthetic.py).  No measurable cost at these sizes.
"""


def _codec_options(codec: str, options: dict[str, str] | None) -> dict[str, str]:
    """Quality defaults, then the caller's options, then (libx264) the settings that keep it deterministic.

    The determinism settings go LAST in ``x264-params`` so a caller's own ``x264-params`` (e.g.
    ``keyint=4``) still applies but cannot switch determinism off by accident.
    """
    defaults = {"crf": "18", "preset": "veryfast"} if codec == "libx264" else {"crf": "10", "b": "0"}
    merged = {**defaults, **(options or {})}
    if codec == "libx264":
        own = merged.get("x264-params", "").strip(":")
        merged["x264-params"] = f"{own}:{X264_DETERMINISTIC}" if own else X264_DETERMINISTIC
    return merged


def encode_video(
    path: Path, frames: Sequence[np.ndarray] | np.ndarray, fps: int, codec: str = "libx264",
    options: dict[str, str] | None = None, container_options: dict[str, str] | None = None,
) -> Path:
    """Write RGB uint8 frames as a real video file (h264/yuv420p mp4, or VP8/VP9 webm by ``codec``).

    The bytes are a pure function of (frames, fps, codec, options) -- DVC hashes them, and two
    machines sharing a DVC remote must agree: one encoder thread and one colour-conversion thread
    (PyAV passes ``thread_count`` to its swscale reformatter), CPU-independent x264
    (:data:`X264_DETERMINISTIC`), and a bit-exact muxer (no ``Lavf<version>`` encoder tag in mp4,
    no random track/segment UIDs in webm, which otherwise differ on every run).  Written atomically
    (:func:`madapter.fileio.atomic_path`), so an interrupted run never leaves a half file.
    """
    path = Path(path)
    height, width = frames[0].shape[:2]
    fmt = "webm" if path.suffix == ".webm" else "mp4"
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format=fmt, options=container_options or {}) as container:
        container.flags |= av.container.Flags.bitexact.value
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_count = 1
        stream.options = _codec_options(codec, options)
        for arr in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(arr), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def split_of(video_index: int, videos_per_class: int, seed: int, class_index: int) -> str:
    """Deterministic train/val/test assignment: about 1/6 val, 1/6 test, at least one each."""
    order = np.random.default_rng([seed, 7919, class_index]).permutation(videos_per_class)
    n_held = max(1, round(videos_per_class / 6))
    rank = int(np.nonzero(order == video_index)[0][0])
    if rank < n_held:
        return "test"
    if rank < 2 * n_held:
        return "val"
    return "train"


def generate_synthetic(root: Path, cfg: SyntheticSection, seed: int) -> Path:
    """Write the synthetic dataset under ``root`` (raw "list" layout) and return ``root``.

    Re-running with the same ``cfg`` and ``seed`` rewrites byte-identical files.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    classes = CATALOGUE[: cfg.classes]
    lines: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    jobs = [(c, v) for c in range(len(classes)) for v in range(cfg.videos_per_class)]
    for class_index, video_index in tqdm(jobs, desc="synthetic videos", unit="video", leave=False):
        name = classes[class_index].name
        rel = f"{name}/{name}_{video_index:03d}.mp4"
        encode_video(root / rel, render_video(class_index, video_index, cfg, seed), cfg.fps)
        split = split_of(video_index, cfg.videos_per_class, seed, class_index)
        lines[split].append(f"{rel} {class_index}")
    for split, rows in lines.items():
        write_text_atomic(root / f"{split}.txt", "".join(row + "\n" for row in rows))
    write_text_atomic(root / "classes.txt", "".join(c.name + "\n" for c in classes))
    logger.info("synthetic set: %d videos, %d classes, %d frames of %dpx -> %s",
                len(jobs), len(classes), cfg.num_frames, cfg.size, root)
    return root
