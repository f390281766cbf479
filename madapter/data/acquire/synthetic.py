"""The built-in offline dataset: deterministic real video files whose classes differ only in frame order
(``task: order``, the default), or, as a control, only in appearance (``task: appearance``).

Why it looks like this: the M-adapter's claim is that its temporal modules make a frozen image
model sensitive to *motion*.  So every class has a partner whose videos are the very same frames
played backwards (``move_right`` video *i* is ``move_left`` video *i* reversed, frame for frame,
noise included).  Averaged over time the two are identical, so a model that pools frame features
without looking at their order cannot beat 50% on a pair; the demo's accuracy above that is the
temporal branch's doing.  Six kinds of motion make six pairs, from the obvious (translations,
zooming) to the subtle (an asymmetric shape turning in place; a shape orbiting a point; a shape
fading in), see :data:`CATALOGUE`.

Every video draws its look from its own seeded random stream: one of five asymmetric shapes,
colour, background colour and texture, size, resting angle, per-frame pixel noise, plus the motion's
start, extent and speed.  The draw is the same for every class (keyed by pair and video index, never
by class), so appearance says nothing about the class and the model has to learn the motion.
Within a pair the appearance is not merely equally distributed but identical: a video and its
reversed twin carry the two labels with the same pixels, and always land in the same split
(:func:`split_of`), so memorising a training video's look cannot tell the twins apart.

Videos are real H.264/yuv420p mp4 files written with PyAV, so the whole pipeline (index -> scan ->
decord decoding) runs on them exactly as on a downloaded dataset; same parameters -> same bytes on
any machine (see :func:`encode_video`; the frames themselves are built from exactly rounded
arithmetic only, see :func:`_quantise`).

``task: textured`` (:func:`render_textured_video`) is the order set again over busy scenes (blotchy
textured backgrounds, a static distractor as bright as the object, heavier noise): the accuracy
benchmark's second order-dependent set, so no finding rests on one generator's look.

``task: appearance`` (:func:`render_appearance_video`) is the opposite control: the class is the
object's shape x colour family (:data:`APPEARANCE_CLASSES`, a saturated colour on a grey background),
the motion and its direction are drawn per video independently of the class, so an order-blind
model loses nothing there.  Splits are
drawn as for the order set (:func:`split_of`).

Layout written (the MMAction2-style "list" layout of the data contracts)::

    <root>/<class>/<class>_<i>.mp4
    <root>/train.txt  val.txt  test.txt   ("<relative path> <label>" lines)
    <root>/classes.txt                    (line i = name of label i)
"""

from __future__ import annotations

import logging
import math
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


# ---------------------------------------------------------------------------------------- shapes
# Each shape is a predicate on "unit" coordinates (u, v) in [-1, 1]^2 (v points down on screen).
# None has a rotational symmetry, and each one's centre of mass is off the pivot (0, 0), so turning
# it clockwise looks different from turning it counter-clockwise at every step.
def _ell(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return ((u >= -1) & (u <= -0.3) & (v >= -1) & (v <= 1)) | ((u >= -1) & (u <= 1) & (v >= 0.3) & (v <= 1))


def _tee(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return ((u >= -1) & (u <= 1) & (v >= -1) & (v <= -0.35)) | ((u >= -0.3) & (u <= 0.3) & (v >= -1) & (v <= 1))


def _wedge(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """A narrow isosceles triangle: base at the top, apex at the bottom."""
    return (v >= -1) & (v <= 1) & (u * 2 <= (1 - v) * 0.65) & (-u * 2 <= (1 - v) * 0.65)


def _half_disc(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return (u * u + v * v <= 1) & (v >= -0.15)


def _flag(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return ((u >= -1) & (u <= -0.6) & (v >= -1) & (v <= 1)) | ((u >= -0.6) & (u <= 1) & (v >= -1) & (v <= 0))


SHAPES: tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], ...] = (_ell, _tee, _wedge, _half_disc, _flag)

SUPERSAMPLE = 2
"""Shapes are drawn at 2x2 sub-pixel positions and averaged: smooth edges, so a slow motion moves
the edge pixels' shades every frame instead of jumping a whole pixel now and then."""

_REACH = 1.42
"""A shape's farthest point from its centre, in units of its half-side (sqrt(2), the unit square's corner)."""


# ---------------------------------------------------------------------------------------- drawing
@dataclass(frozen=True)
class Appearance:
    """Everything about a video's look; drawn the same way for every class (class-independent)."""

    shape: int
    """Index into :data:`SHAPES`."""
    colour: np.ndarray
    """float [3], every channel in 155..255: brighter than any background pixel, in every channel."""
    background: np.ndarray
    """float [S, S, 3]: a flat colour (channels 25..105) plus static texture (+-10)."""
    half_side: float
    """Pixels from the shape's centre to the edge of its unit square (0.14-0.19 of the frame)."""
    angle: float
    """Resting orientation, radians."""
    noise: np.ndarray
    """int [T, S, S, 3] in -4..4: fresh sensor noise in every frame."""

    @property
    def reach(self) -> float:
        return self.half_side * _REACH


def _appearance(rng: np.random.Generator, num_frames: int, size: int) -> Appearance:
    shape = int(rng.integers(len(SHAPES)))
    colour = rng.integers(155, 256, size=3).astype(np.float64)
    flat = rng.integers(25, 106, size=3)
    texture = rng.integers(-10, 11, size=(size, size, 1))
    half_side = size * rng.uniform(0.14, 0.19)
    angle = rng.uniform(0, 2 * math.pi)
    noise = rng.integers(-4, 5, size=(num_frames, size, size, 3))
    return Appearance(shape, colour, (flat + texture).astype(np.float64), half_side, angle, noise)


@dataclass(frozen=True)
class Poses:
    """Where the shape is in each frame: float [T] arrays (pixels, radians, 0..1 opacity)."""

    cx: np.ndarray
    cy: np.ndarray
    half_side: np.ndarray
    angle: np.ndarray
    alpha: np.ndarray


def _poses(num_frames: int, look: Appearance, **changing: np.ndarray | float) -> Poses:
    """Poses with the appearance's resting values for everything that ``changing`` does not set."""
    base = {"half_side": look.half_side, "angle": look.angle, "alpha": 1.0}
    values = {**base, **changing}
    return Poses(**{k: np.broadcast_to(np.asarray(values[k], dtype=np.float64), (num_frames,)).copy()
                    for k in ("cx", "cy", "half_side", "angle", "alpha")})


def _quantise(x: np.ndarray) -> np.ndarray:
    """Round to a 2^-20 grid.

    Why: sines and cosines come from the C library, whose last bit may differ between CPUs (FMA vs
    SSE2 code paths).  Rounding to a coarse binary grid makes such a difference vanish (except with
    vanishing probability), and everything after it is exactly rounded IEEE arithmetic, identical
    everywhere -- so the frames, and hence the mp4 bytes, are the same on every machine.
    """
    return np.round(np.asarray(x, dtype=np.float64) * 2.0**20) / 2.0**20


def _draw(look: Appearance, poses: Poses, size: int) -> Frames:
    """Rasterise the shape over the background for every frame, with sub-pixel coverage and noise."""
    k = SUPERSAMPLE
    t = len(poses.cx)
    samples = (np.arange(size * k, dtype=np.float64) + 0.5) / k  # sub-pixel centres, in pixels
    cos = _quantise([math.cos(a) for a in poses.angle])[:, None, None]
    sin = _quantise([math.sin(a) for a in poses.angle])[:, None, None]
    dx = samples[None, None, :] - _quantise(poses.cx)[:, None, None]
    dy = samples[None, :, None] - _quantise(poses.cy)[:, None, None]
    scale = _quantise(poses.half_side)[:, None, None]
    u = (cos * dx + sin * dy) / scale  # the frame turned by -angle: the shape turns by +angle (clockwise)
    v = (cos * dy - sin * dx) / scale
    inside = SHAPES[look.shape](u, v)
    coverage = inside.reshape(t, size, k, size, k).sum(axis=(2, 4), dtype=np.int64) / (k * k)
    weight = (coverage * _quantise(poses.alpha)[:, None, None])[..., None]
    frames = look.background[None] + weight * (look.colour - look.background)[None] + look.noise
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------- motions
# Each motion gives the poses of the FORWARD class of its pair; the partner plays them backwards.
#
# The motions are BIG on purpose: the demo's frozen ViT sees a 64 px frame as 4x4 patches of 16 px,
# and a random-init one only notices a motion that moves the object across patches.  Measured with
# the demo's M-adapter head on frozen random ViT-Tiny features (first 4 classes, 30 epochs):
# crossings of 35-50% of the frame gave 60% test top-1, crossings of 50-75% gave 95%.  So shapes
# cross most of the frame (clipped at the border if need be), zoom by 4-7x, turn by half a turn or
# more; the order cue of the subtle pairs is still subtle (a shape turning in place, a shape fading in).
# The other lever is the number of videos, see ``SyntheticSection.videos_per_class``.
Motion = Callable[[np.random.Generator, Appearance, int, int], Poses]


def _travel(rng: np.random.Generator, size: int) -> tuple[float, float]:
    """Start and stop of a crossing: 50-75% of the frame, from 12% in to 12% before the far edge."""
    distance = size * rng.uniform(0.5, 0.75)
    start = size * rng.uniform(0.12, 0.88 - distance / size)
    return start, start + distance


def _move_right(rng: np.random.Generator, look: Appearance, n: int, size: int) -> Poses:
    start, stop = _travel(rng, size)
    lane = rng.uniform(look.reach, size - look.reach)
    return _poses(n, look, cx=np.linspace(start, stop, n), cy=lane)


def _move_down(rng: np.random.Generator, look: Appearance, n: int, size: int) -> Poses:
    start, stop = _travel(rng, size)
    lane = rng.uniform(look.reach, size - look.reach)
    return _poses(n, look, cx=lane, cy=np.linspace(start, stop, n))


def _grow(rng: np.random.Generator, look: Appearance, n: int, size: int) -> Poses:
    """Zooming in: from 30-45% to 170-220% of the shape's size, about a point near the middle."""
    cx, cy = rng.uniform(0.4 * size, 0.6 * size, size=2)
    small, large = look.half_side * rng.uniform(0.3, 0.45), look.half_side * rng.uniform(1.7, 2.2)
    return _poses(n, look, cx=cx, cy=cy, half_side=np.linspace(small, large, n))


def _rotate_cw(rng: np.random.Generator, look: Appearance, n: int, size: int) -> Poses:
    """Turning in place by 180-288 degrees (12-19 a frame): the object never leaves its spot."""
    cx, cy = rng.uniform(0.4 * size, 0.6 * size, size=2)
    turn = 2 * math.pi * rng.uniform(0.5, 0.8)
    return _poses(n, look, cx=cx, cy=cy, angle=look.angle + np.linspace(0, turn, n))


def _orbit_cw(rng: np.random.Generator, look: Appearance, n: int, size: int) -> Poses:
    """Circling a point near the middle (radius 22-30% of the frame) by 216-324 degrees, not turning."""
    radius = size * rng.uniform(0.22, 0.3)
    slack = max(0.0, size / 2 - radius - look.reach)
    centre = size / 2 + rng.uniform(-slack, slack, size=2)
    phase = rng.uniform(0, 2 * math.pi) + np.linspace(0, 2 * math.pi * rng.uniform(0.6, 0.9), n)
    cx = centre[0] + radius * _quantise([math.cos(p) for p in phase])
    cy = centre[1] + radius * _quantise([math.sin(p) for p in phase])  # y grows downwards: clockwise
    return _poses(n, look, cx=cx, cy=cy)


def _fade_in(rng: np.random.Generator, look: Appearance, n: int, size: int) -> Poses:
    """Appearing out of the background: opacity from 0-10% to 90-100%, not moving at all."""
    cx, cy = rng.uniform(0.35 * size, 0.65 * size, size=2)
    return _poses(n, look, cx=cx, cy=cy, alpha=np.linspace(rng.uniform(0, 0.1), rng.uniform(0.9, 1.0), n))


@dataclass(frozen=True)
class SyntheticClass:
    name: str
    motion: Motion
    """Poses of the pair's forward class."""
    reverse: bool
    """True: this class is the pair's forward videos with the frame order reversed."""


def _pair(forward: str, backward: str, motion: Motion) -> tuple[SyntheticClass, SyntheticClass]:
    return SyntheticClass(forward, motion, False), SyntheticClass(backward, motion, True)


CATALOGUE: tuple[SyntheticClass, ...] = (
    *_pair("move_right", "move_left", _move_right),
    *_pair("grow", "shrink", _grow),
    *_pair("move_down", "move_up", _move_down),
    *_pair("rotate_cw", "rotate_ccw", _rotate_cw),
    *_pair("orbit_cw", "orbit_ccw", _orbit_cw),
    *_pair("fade_in", "fade_out", _fade_in),
)
"""Pair partners adjacent (label 2k+1 = label 2k reversed), so any even prefix is whole pairs; the
easiest motions first, so a small test set (``classes: 2`` or ``4``) is still learnable quickly."""


def render_video(class_index: int, video_index: int, cfg: SyntheticSection, seed: int) -> Frames:
    """Frames of one synthetic video; a pure function of its arguments.

    The random stream is keyed by the PAIR (``class_index // 2``), not the class, so ``move_left``
    video *i* is exactly ``move_right`` video *i* reversed: the pair differs ONLY in frame order.
    """
    spec = CATALOGUE[class_index]
    rng = np.random.default_rng([seed, class_index // 2, video_index])
    look = _appearance(rng, cfg.num_frames, cfg.size)
    frames = _draw(look, spec.motion(rng, look, cfg.num_frames, cfg.size), cfg.size)
    return np.ascontiguousarray(frames[::-1]) if spec.reverse else frames


# ---------------------------------------------------------------------------------------- appearance task
COLOUR_FAMILIES: tuple[tuple[str, int], ...] = (("red", 0), ("green", 1), ("blue", 2))
"""Name and dominant RGB channel of each colour family of the appearance task."""

SHAPE_NAMES: tuple[str, ...] = ("ell", "tee", "wedge", "half_disc", "flag")
"""Names of :data:`SHAPES`, in order."""

APPEARANCE_CLASSES: tuple[tuple[str, int, int], ...] = tuple(
    (f"{SHAPE_NAMES[k % len(SHAPES)]}_{COLOUR_FAMILIES[k % 3][0]}", k % len(SHAPES), COLOUR_FAMILIES[k % 3][1])
    for k in range(len(CATALOGUE)))
"""``(name, shape, dominant channel)`` per class of ``task: appearance``: class ``k`` is shape ``k % 5``
in colour family ``k % 3``, so all 12 classes differ (5 x 3 combinations) and any prefix mixes
shapes AND colours (``classes: 4``: ell_red, tee_green, wedge_blue, half_disc_red; a prefix of one
colour would leave a random-init backbone only the shape, its hardest cue)."""


def _appearance_look(rng: np.random.Generator, shape: int, channel: int, num_frames: int, size: int) -> Appearance:
    """A look of class ``(shape, channel)``: a saturated colour (the dominant channel 200-255, the
    others 0-50) on a GREY textured background (the order set's background made grey: its brightness
    and texture, no hue).  Why: with coloured backgrounds the object's tint was a weak cue (a red
    object on a reddish background); measured with pale tints on coloured backgrounds, every mode sat
    near chance (0.33-0.48 test top-1, 4 classes).  Size, resting angle and noise as in the order set."""
    look = _appearance(rng, num_frames, size)
    colour = rng.integers(0, 51, size=3).astype(np.float64)
    colour[channel] = float(rng.integers(200, 256))
    grey = np.repeat(np.rint(look.background.mean(axis=2, keepdims=True)), 3, axis=2)
    return Appearance(shape, colour, grey, look.half_side, look.angle, look.noise)


def render_appearance_video(class_index: int, video_index: int, cfg: SyntheticSection, seed: int) -> Frames:
    """Frames of one ``task: appearance`` video; a pure function of its arguments.

    The class fixes the shape and colour family only.  The motion (any of the order set's six) and
    whether it plays forwards or backwards are drawn from the video's own stream, with the same
    probabilities for every class: time-averaged or time-reversed, no class is told apart by its
    motion, and a model that ignores frame order loses nothing.
    """
    rng, look, pair, backwards = appearance_draw(class_index, video_index, cfg, seed)
    frames = _draw(look, CATALOGUE[2 * pair].motion(rng, look, cfg.num_frames, cfg.size), cfg.size)
    return np.ascontiguousarray(frames[::-1]) if backwards else frames


def appearance_draw(class_index: int, video_index: int, cfg: SyntheticSection,
                    seed: int) -> tuple[np.random.Generator, Appearance, int, bool]:
    """The draws of one ``task: appearance`` video before its poses: the stream (to draw the poses
    from next), the look, the motion (pair index into :data:`CATALOGUE`) and its direction."""
    _, shape, channel = APPEARANCE_CLASSES[class_index]
    rng = np.random.default_rng([seed, 104729, class_index, video_index])  # a stream apart from the order set's
    look = _appearance_look(rng, shape, channel, cfg.num_frames, cfg.size)
    pair = int(rng.integers(len(CATALOGUE) // 2))
    return rng, look, pair, bool(rng.integers(2))


# ---------------------------------------------------------------------------------------- textured task
def _textured_look(rng: np.random.Generator, num_frames: int, size: int) -> Appearance:
    """The order set's look made harder to see (``task: textured``): a background of coarse blotches
    (8-px cells, +-35) over fine grain (+-15) on a flat colour, a STATIC distractor (another shape,
    as bright as the object, drawn into the background) and heavier sensor noise (+-10 a frame).

    Why: the demo's set is drawn flat and clean, which flatters any model; a second set whose
    backgrounds are busy and whose brightest thing is not always the moving one checks that what the
    branch learns is the motion, not a property of one generator (the issue's "second order set").
    """
    look = _appearance(rng, num_frames, size)
    cells = -(-size // 8)
    coarse = np.kron(rng.integers(-35, 36, size=(cells, cells, 3)), np.ones((8, 8, 1), dtype=np.int64))[:size, :size]
    fine = rng.integers(-15, 16, size=(size, size, 1))
    flat = rng.integers(40, 121, size=3)
    background = np.clip(flat + coarse + fine, 0, 255).astype(np.float64)
    distractor = _appearance(rng, 1, size)
    spot = rng.uniform(distractor.reach, size - distractor.reach, size=2)
    still = Appearance(distractor.shape, distractor.colour, background, distractor.half_side, distractor.angle,
                       np.zeros((1, size, size, 3), dtype=np.int64))
    drawn = _draw(still, _poses(1, still, cx=spot[0], cy=spot[1]), size)[0].astype(np.float64)
    noise = rng.integers(-10, 11, size=(num_frames, size, size, 3))
    return Appearance(look.shape, look.colour, drawn, look.half_side, look.angle, noise)


def render_textured_video(class_index: int, video_index: int, cfg: SyntheticSection, seed: int) -> Frames:
    """Frames of one ``task: textured`` video: the order set's classes and motions (:data:`CATALOGUE`,
    twins keyed by the pair as in :func:`render_video`) over :func:`_textured_look`'s busy scene."""
    spec = CATALOGUE[class_index]
    rng = np.random.default_rng([seed, 15485863, class_index // 2, video_index])  # apart from the order set's
    look = _textured_look(rng, cfg.num_frames, cfg.size)
    frames = _draw(look, spec.motion(rng, look, cfg.num_frames, cfg.size), cfg.size)
    return np.ascontiguousarray(frames[::-1]) if spec.reverse else frames


def class_names(cfg: SyntheticSection) -> list[str]:
    """Label i's name for ``cfg.task`` and ``cfg.classes``."""
    if cfg.task == "appearance":
        return [name for name, _, _ in APPEARANCE_CLASSES[: cfg.classes]]
    return [c.name for c in CATALOGUE[: cfg.classes]]


def render(class_index: int, video_index: int, cfg: SyntheticSection, seed: int) -> Frames:
    """Frames of one video of ``cfg.task``."""
    if cfg.task == "appearance":
        return render_appearance_video(class_index, video_index, cfg, seed)
    if cfg.task == "textured":
        return render_textured_video(class_index, video_index, cfg, seed)
    return render_video(class_index, video_index, cfg, seed)


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
    """Deterministic train/val/test assignment: about 1/6 val, 1/6 test, at least one each.

    Drawn per PAIR, so a video and its reversed twin (same index, partner class, same look) always
    share a split.  Why: in train, the same pixels carry both labels, so memorising a video's look is
    useless and only its motion separates the twins; and no test video's twin was seen in training
    (with per-class splits a model that memorises looks is pushed to the WRONG label on a twin, which
    measures memorisation rather than motion).
    """
    order = np.random.default_rng([seed, 7919, class_index // 2]).permutation(videos_per_class)
    n_held = max(1, round(videos_per_class / 6))
    rank = int(np.nonzero(order == video_index)[0][0])
    if rank < n_held:
        return "test"
    if rank < 2 * n_held:
        return "val"
    return "train"


def generate_synthetic(root: Path, cfg: SyntheticSection, seed: int) -> Path:
    """Write the synthetic dataset under ``root`` (raw "list" layout) and return ``root``.

    Re-running with the same ``cfg`` and ``seed`` rewrites byte-identical files.  The default set
    (12 classes x 90 videos of 16 frames at 64 px) takes about 15 seconds on one core.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    classes = class_names(cfg)
    lines: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    jobs = [(c, v) for c in range(len(classes)) for v in range(cfg.videos_per_class)]
    for class_index, video_index in tqdm(jobs, desc="synthetic videos", unit="video", leave=False, disable=None):
        name = classes[class_index]
        rel = f"{name}/{name}_{video_index:03d}.mp4"
        encode_video(root / rel, render(class_index, video_index, cfg, seed), cfg.fps)
        split = split_of(video_index, cfg.videos_per_class, seed, class_index)
        lines[split].append(f"{rel} {class_index}")
    for split, rows in lines.items():
        write_text_atomic(root / f"{split}.txt", "".join(row + "\n" for row in rows))
    write_text_atomic(root / "classes.txt", "".join(name + "\n" for name in classes))
    logger.info("synthetic set (%s): %d videos, %d classes (%s), %d frames of %dpx -> %s", cfg.task,
                len(jobs), len(classes), ", ".join(f"{s}: {len(r)}" for s, r in lines.items()),
                cfg.num_frames, cfg.size, root)
    return root
