"""The frame store's formats: bytes per video, training read throughput and pixel error, in one run.

Three ways to feed training the same videos, measured on the same machine in one process:

* ``raw`` -- the uint8 store (``decode.format: raw``): ``.npy`` shards, memory-mapped.
* ``jpeg`` -- the compressed store (``decode.format: jpeg``, ``decode.quality``): JPEG frames in
  ``.jpg.bin`` shards, only the clip's frames decoded (libjpeg-turbo through simplejpeg).
* ``decord`` -- no store: every clip opens its SOURCE video with decord and seeks the clip's
  ``model.num_frames`` frames (the MMAction2 default: DecordInit, SampleFrames, DecordDecode).

Both stores hold the SAME frames: each video is decoded once by the decode stage's own function
(:func:`madapter.data.store.decode.decode_video`: ``frames_per_video`` frames on the uniform grid,
short side to ``size``, centre crop) and written by the real :class:`~madapter.data.store.frame_store.ShardWriter`
in both formats.  A training clip is what training gets: ``ClipDataset(train=True)`` -- TSN
random frames, a random ``crop`` crop, a normalised float tensor ``[T, 3, crop, crop]``; the
decord path applies the same sampling (over the source's frames) and the same crop and
normalisation to the frames it seeks (resizing the short side to ``size`` first, a no-op for
240-line sources).  Throughput is per core: one process, one torch thread, one decord thread; the
loaders take turns clip by clip (so a neighbour's burst hits all of them) and each clip counts its fastest of
``--repeats`` passes (each draws other random frames).  The files were just written, so the page cache is warm: this
measures CPU, not disk.

Two sets of source videos, in the same run:

* ``natural`` (the numbers to quote): pans and zooms over photographs that ship with matplotlib
  and scikit-learn (``grace_hopper.jpg``, ``china.jpg``, ``flower.jpg``), a soft moving blob and
  per-frame sensor noise; 320x240 like UCF101, 25 fps, h264 ``crf 23``.  Encoded with a key frame
  every ``--gop`` frames (the first value builds the stores; decord is timed on every value:
  12 is decord's best case, 250 is x264's default and what a re-encoded download often has).
* ``synthetic``: the built-in synthetic set's renderer at ``size`` px (flat shapes on textured
  backgrounds): what the demo stores, shown because it compresses far better than real footage.

Also: pixel error of the JPEG store against the raw one (mean absolute error in 0-255 units, and
PSNR), the decode stage's added encoding time, the projected disk for UCF101 (13,320 videos) and
Kinetics-400 (240k training videos), and a codec table (``--codecs``): the candidate libraries at
several qualities on the same frames -- bytes, error, encode and decode time per frame on one core.

Runs::

    .venv/bin/python -m benchmarks.store                  # ~3 min; benchmarks/results/store.{json,md,png}
    .venv/bin/python -m benchmarks.store --quick          # ~45 s: fewer videos, passes and codec qualities
    .venv/bin/python -m benchmarks.store --smoke --out /tmp/store.json   # ~30 s: checks the script works
"""

from __future__ import annotations

import argparse
import io
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks.harness import (
    ArgumentParser,
    Benchmark,
    BenchmarkError,
    footer,
    interleaved,
    package_version,
    positive,
    pyplot,
    recorded,
    save,
)

logger = logging.getLogger("benchmarks.store")
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
RAW_BYTES_PER_FRAME = 3  # uint8 RGB
PROJECTIONS = {"UCF101": 13_320, "Kinetics-400 (train)": 240_000}
"""Videos per dataset for the projected store size (the issue's figures)."""
TARGET_SIZE_RATIO = 1 / 8
TARGET_SPEEDUP = 2.0
"""Issue 11: the compressed store <= 1/8 of the uint8 store's bytes, and >= 2x decord's clips/s."""
FORMATS = ("raw", "jpeg")
RENDER_PROCESSES = 2
"""Processes rendering the natural source videos (set-up only; every measurement runs in one process)."""
QUICK = {"videos": 16, "repeats": 3, "qualities": [85, 90, 95], "codec_videos": 2, "codec_repeats": 3}
"""``--quick``: the same sets, stores, loaders and codecs on fewer videos, passes and qualities."""
SMOKE = {"videos": 4, "frames": 24, "size": 64, "crop": 56, "frames_per_video": 8, "num_frames": 4,
         "repeats": 1, "gops": [12], "qualities": [90], "codec_videos": 2,
         "codec_repeats": 1}


# ----------------------------------------------------------------------------- source videos
def photographs() -> list[tuple[str, np.ndarray]]:
    """Natural photographs that ship with installed packages (no download): name and RGB array."""
    import matplotlib
    from PIL import Image

    candidates = [Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"]
    try:
        import sklearn.datasets

        candidates += [Path(sklearn.datasets.__file__).parent / "images" / name for name in ("china.jpg", "flower.jpg")]
    except ImportError:
        logger.warning("scikit-learn not installed: the natural set uses one photograph only")
    found = [(p.name, np.array(Image.open(p).convert("RGB"))) for p in candidates if p.is_file()]
    if not found:
        raise BenchmarkError("store.py: no sample photograph found (matplotlib's grace_hopper.jpg); reinstall matplotlib")
    return found


def natural_clip(rng: np.random.Generator, photo: np.ndarray, frames: int, height: int, width: int) -> np.ndarray:
    """A camera panning and zooming over ``photo``, a soft blob crossing it, sensor noise: uint8 [T, H, W, 3].

    Real footage is neither flat nor white noise: photographs carry natural image statistics, the
    camera motion makes every frame differ, and the noise is what sensors add (the video codec
    then smooths part of it away, as it does for real clips).
    """
    import torch
    import torch.nn.functional as F

    ph, pw = photo.shape[:2]
    aspect = width / height
    scale0, scale1 = rng.uniform(0.55, 0.8, 2)  # window height as a fraction of the photo's (zoom in or out)
    out = np.empty((frames, height, width, 3), dtype=np.uint8)
    image = torch.from_numpy(photo).permute(2, 0, 1).float()[None]
    start, stop = rng.uniform(0, 1, 2), rng.uniform(0, 1, 2)
    blob_from, blob_to = rng.uniform([0, 0], [height, width]), rng.uniform([0, 0], [height, width])
    colour = rng.uniform(40, 230, 3).astype(np.float32)
    gy, gx = np.arange(height, dtype=np.float32), np.arange(width, dtype=np.float32)
    for t in range(frames):
        a = t / max(frames - 1, 1)
        win_h = min(ph, (scale0 + a * (scale1 - scale0)) * ph)
        win_w = min(pw, win_h * aspect)
        win_h = win_w / aspect
        cy, cx = (1 - a) * start + a * stop
        top, left = int(cy * (ph - win_h)), int(cx * (pw - win_w))
        window = image[..., top : top + int(win_h), left : left + int(win_w)]
        frame = F.interpolate(window, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
        pixels = frame[0].permute(1, 2, 0).numpy()
        by, bx = (1 - a) * blob_from + a * blob_to
        # A Gaussian is separable: the blob's weight is an outer product (float32: ~5x faster to render).
        weight = np.outer(np.exp(-((gy - by) ** 2) / (2 * 18.0**2)), np.exp(-((gx - bx) ** 2) / (2 * 18.0**2)))
        weight = weight.astype(np.float32)[..., None]
        pixels = pixels * (1 - weight) + colour * weight + 2.0 * rng.standard_normal(pixels.shape, dtype=np.float32)
        out[t] = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    return out


def make_natural_videos(folder: Path, count: int, frames: int, gops: list[int], seed: int) -> dict[str, list[Path]]:
    """``count`` natural-looking 320x240 h264 videos, each rendered once and encoded with a key frame
    every ``gop`` frames for each of ``gops``: ``{"GOP <n>": paths}``, the same content in each.

    Rendering and encoding are set-up, not measured, and were most of the run's time: they run in
    :data:`RENDER_PROCESSES` processes (one video each, seeded by its index: the same videos either way).
    """
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    targets = [{gop: folder / f"gop{gop}-{frames}f" / f"natural_{i:03d}.mp4" for gop in gops} for i in range(count)]
    todo = [(i, seed, frames, t) for i, t in enumerate(targets) if not all(p.is_file() for p in t.values())]
    if len(todo) < 4 * RENDER_PROCESSES:  # a few (or none: a kept --work-dir): not worth starting processes
        for job in tqdm(todo, desc="natural videos", unit="video", leave=False):
            _render_natural(job)
    else:
        with ProcessPoolExecutor(min(RENDER_PROCESSES, len(todo)), mp_context=get_context("spawn"),
                                 initializer=_one_thread) as pool:
            for _ in tqdm(pool.map(_render_natural, todo), total=len(todo), desc="natural videos", unit="video", leave=False):
                pass
    return {f"GOP {gop}": [t[gop] for t in targets] for gop in gops}


def _one_thread() -> None:
    """Render processes: one torch thread each (they run side by side)."""
    import torch

    torch.set_num_threads(1)


def _render_natural(job: tuple[int, int, int, dict[int, Path]]) -> None:
    """One natural video (index ``i``, its own seed), encoded once per GOP."""
    from madapter.data.acquire.synthetic import encode_video

    i, seed, frames, targets = job
    photos = photographs()
    clip = natural_clip(np.random.default_rng([seed, i]), photos[i % len(photos)][1], frames, 240, 320)
    for gop, path in targets.items():
        encode_video(path, clip, fps=25, options={"crf": "23", "preset": "veryfast",
                                                  "x264-params": f"keyint={gop}:min-keyint={gop}"})


def make_synthetic_videos(folder: Path, count: int, frames: int, size: int, seed: int) -> list[Path]:
    """``count`` videos of the built-in synthetic set at ``size`` px (every class in turn)."""
    from madapter.config import SyntheticSection
    from madapter.data.acquire.synthetic import CATALOGUE, encode_video, render_video

    cfg = SyntheticSection(classes=len(CATALOGUE) - len(CATALOGUE) % 2, videos_per_class=3, num_frames=frames,
                           size=size, fps=8)
    paths = []
    for i in tqdm(range(count), desc="synthetic videos", unit="video", leave=False):
        path = folder / f"{size}px-{frames}f" / f"synthetic_{i:03d}.mp4"
        if not path.is_file():  # a kept --work-dir: same seed, same video
            encode_video(path, render_video(i % cfg.classes, i // cfg.classes, cfg, seed), cfg.fps)
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------- the two stores
@dataclass
class StoreBuild:
    root: Path
    bytes: int
    write_s: float


def decode_frames(paths: list[Path], frames_per_video: int, size: int) -> list[np.ndarray]:
    """Each video's stored frames, by the decode stage's own function (one decode for both stores)."""
    from madapter.data.index.schema import Row
    from madapter.data.store.decode import DecodeJob, decode_video

    decoded = []
    for path in tqdm(paths, desc="decode stage frames", unit="video", leave=False):
        out = decode_video(DecodeJob(str(path), Row(path.name, 0, "c", "train")), frames_per_video, size, "decord")
        if out.frames is None:
            raise BenchmarkError(f"store.py: {path}: the decode stage could not decode it ({out.error})")
        decoded.append(out.frames)
    return decoded


def write_store(root: Path, fmt: str, quality: int, videos: list[np.ndarray], names: list[str]) -> StoreBuild:
    """One store of ``videos`` in ``fmt`` through the real writer and metadata; bytes and write seconds."""
    from madapter.config import DecodeSection
    from madapter.data.store.frame_store import ShardWriter, format_meta, frame_codec, write_store_meta

    frames_per_video, size = videos[0].shape[0], videos[0].shape[1]
    cfg = DecodeSection(format=fmt, quality=quality, frames_per_video=frames_per_video, size=size, shard_size=256)
    started = time.perf_counter()
    writer = ShardWriter(root / "train", cfg.shard_size, frames_per_video, size, frame_codec(cfg))
    for name, frames in zip(names, videos, strict=True):
        writer.add(name, 0, "c", frames, len(frames))
    summary = writer.close()
    seconds = time.perf_counter() - started
    write_store_meta(root, {"classes": ["c"], "frames_per_video": frames_per_video, "size": size, **format_meta(cfg),
                            "bytes": summary.bytes})
    return StoreBuild(root, summary.bytes, seconds)


def pixel_error(raw_root: Path, jpeg_root: Path) -> dict[str, float]:
    """Every stored frame of the JPEG store against the raw store's: MAE (0-255), max error, PSNR."""
    from madapter.data.store.frame_store import FrameStore

    raw, jpeg = FrameStore(raw_root, "train"), FrameStore(jpeg_root, "train")
    abs_sum, sq_sum, count, worst = 0.0, 0.0, 0, 0
    for i in range(len(raw)):
        diff = raw.frames(i).astype(np.int16) - jpeg.frames(i).astype(np.int16)
        abs_sum += float(np.abs(diff).sum())
        sq_sum += float((diff.astype(np.float64) ** 2).sum())
        count += diff.size
        worst = max(worst, int(np.abs(diff).max()))
    mse = sq_sum / count
    return {"mae": abs_sum / count, "max_abs": worst, "psnr_db": float(10 * np.log10(255**2 / mse)) if mse else float("inf")}


def source_codec_error(count: int, args: argparse.Namespace, raw_root: Path) -> dict[str, float]:
    """How far the natural videos' own h264 already is from the frames rendered for them: the first
    ``count`` clips rendered again (same seed) and compared, at the stored grid, size and crop, with
    the raw store's frames (which are the decoded videos).  Puts the JPEG store's error in scale."""
    from madapter.data.sampling import uniform_grid
    from madapter.data.store.frame_store import FrameStore
    from madapter.data.transforms import resize_and_center_crop

    photos = photographs()
    store = FrameStore(raw_root, "train")
    abs_sum, sq_sum, n = 0.0, 0.0, 0
    for i in range(min(count, len(store))):
        clip = natural_clip(np.random.default_rng([0, i]), photos[i % len(photos)][1], args.source_frames, 240, 320)
        rendered = resize_and_center_crop(clip[uniform_grid(len(clip), args.frames_per_video)], args.size)
        diff = store.frames(i).astype(np.float64) - rendered.astype(np.float64)
        abs_sum, sq_sum, n = abs_sum + np.abs(diff).sum(), sq_sum + (diff**2).sum(), n + diff.size
    return {"mae": abs_sum / n, "psnr_db": float(10 * np.log10(255**2 / (sq_sum / n))), "videos": min(count, len(store))}


# ----------------------------------------------------------------------------- training read throughput
Loader = Callable[[int, int], Any]
"""``(video index, epoch) -> training clip``."""


def store_loaders(root: Path, num_frames: int, crop: int) -> dict[str, Loader]:
    """The training path on a store: ``ClipDataset(train=True)`` items (clip tensor), and the uint8 frames alone."""
    from madapter.data.clips import ClipDataset
    from madapter.data.sampling import segment_indices
    from madapter.data.store.frame_store import FrameStore

    store = FrameStore(root, "train")
    dataset = ClipDataset(store, num_frames, True, MEAN, STD, crop_size=crop, seed=0)

    def clip(i: int, epoch: int) -> Any:
        dataset.set_epoch(epoch)
        return dataset[i][0]

    def frames(i: int, epoch: int) -> Any:
        return store.frames(i, segment_indices(store.frames_per_video, num_frames, train=True, seed=[0, epoch, i, 0]))

    return {"clip": clip, "frames": frames}


def decord_loaders(paths: list[Path], num_frames: int, size: int, crop: int) -> dict[str, Loader]:
    """On-the-fly decoding: open the source, seek the clip's frames, the same transforms as the store path."""
    from madapter.data.sampling import segment_indices
    from madapter.data.transforms import crop as crop_frames
    from madapter.data.transforms import normalize, random_crop_offset, resize_short_side
    from madapter.data.video import DecordVideo

    def frames(i: int, epoch: int) -> np.ndarray:
        video = DecordVideo(paths[i], num_threads=1)  # a reader per item, as MMAction2's DecordInit
        try:
            return video.get_frames(segment_indices(video.num_frames, num_frames, train=True, seed=[0, epoch, i, 0]))
        finally:
            video.close()

    def clip(i: int, epoch: int) -> Any:
        picked = resize_short_side(frames(i, epoch), size)
        top, left = random_crop_offset(picked.shape[1], picked.shape[2], crop, np.random.default_rng([0, epoch, i, 0, 1]))
        return normalize(crop_frames(picked, top, left, crop), MEAN, STD)

    return {"clip": clip, "frames": frames}


def throughput(loaders: dict[str, dict[str, Loader]], videos: int, repeats: int) -> dict[str, dict[str, Any]]:
    """clips/s of every loader over all videos, the loaders taking turns clip by clip (:func:`interleaved`).

    ``clips_per_s``: ``videos`` over the sum, per clip, of its fastest of ``repeats`` passes (each pass
    draws other random frames: for decord the cheapest seeks win, which favours it);
    ``clips_per_s_median_pass``: over the median pass's total.
    """
    return {name: {kind: {"clips_per_s": videos / float(t.min(axis=0).sum()),
                          "clips_per_s_median_pass": videos / float(np.median(t.sum(axis=1))),
                          "pass_seconds": t.sum(axis=1).tolist()} for kind, t in kinds.items()}
            for name, kinds in interleaved(loaders, videos, repeats).items()}


# ----------------------------------------------------------------------------- codec table
@dataclass(frozen=True)
class Candidate:
    """One codec library at one quality: ``encode(frame) -> bytes``, ``decode(list of bytes, out)``."""

    library: str
    codec: str
    quality: int
    encode: Callable[[np.ndarray], bytes]
    decode: Callable[[list[bytes], np.ndarray], None]
    note: str = ""


def candidates(qualities: list[int]) -> tuple[list[Candidate], dict[str, str]]:
    """Every candidate importable here, and why the others are missing."""
    found: list[Candidate] = []
    missing: dict[str, str] = {}
    from madapter.data.store.codec import JpegCodec

    for q in qualities:
        for sub in ("420", "444"):
            codec = JpegCodec(q, sub)

            def dec(records: list[bytes], out: np.ndarray, codec: JpegCodec = codec) -> None:
                for k, record in enumerate(records):
                    codec.decode_into(record, out[k])

            found.append(Candidate(f"simplejpeg {package_version('simplejpeg')}", f"JPEG 4:{sub[1]}:{sub[2]}", q,
                                   codec.encode, dec, "the store's codec" if sub == "420" else ""))
    try:
        import torch
        from torchvision.io import decode_jpeg, encode_jpeg

        def tv_encode(frame: np.ndarray, q: int) -> bytes:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return encode_jpeg(torch.from_numpy(frame).permute(2, 0, 1).contiguous(), quality=q).numpy().tobytes()

        def tv_decode(records: list[bytes], out: np.ndarray) -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                tensors = decode_jpeg([torch.frombuffer(bytearray(r), dtype=torch.uint8) for r in records])  # batched API
            for k, image in enumerate(tensors):
                out[k] = image.permute(1, 2, 0).numpy()

        for q in qualities:
            found.append(Candidate(f"torchvision {package_version('torchvision')}", "JPEG 4:2:0", q,
                                   lambda f, q=q: tv_encode(f, q), tv_decode, "deprecated since 0.29 (torchcodec)"))
    except ImportError as err:
        missing["torchvision.io"] = str(err)
    from PIL import Image

    def pil_encode(frame: np.ndarray, fmt: str, q: int) -> bytes:
        buffer = io.BytesIO()
        options = {"subsampling": 2} if fmt == "JPEG" else {"method": 4}
        Image.fromarray(frame).save(buffer, format=fmt, quality=q, **options)
        return buffer.getvalue()

    def pil_decode(records: list[bytes], out: np.ndarray) -> None:
        for k, record in enumerate(records):
            with Image.open(io.BytesIO(record)) as image:
                out[k] = np.asarray(image.convert("RGB"))

    for q in qualities:
        found.append(Candidate(f"Pillow {package_version('pillow')}", "JPEG 4:2:0", q, lambda f, q=q: pil_encode(f, "JPEG", q), pil_decode))
        found.append(Candidate(f"Pillow {package_version('pillow')}", "WebP", q, lambda f, q=q: pil_encode(f, "WEBP", q), pil_decode,
                               "lossy, method 4"))
    try:
        import turbojpeg  # noqa: F401

        missing["PyTurboJPEG"] = "installed but not wired in: same libjpeg-turbo TurboJPEG API as simplejpeg"
    except (ImportError, OSError) as err:
        missing["PyTurboJPEG"] = (f"not measured ({type(err).__name__}): it loads a system libturbojpeg through ctypes "
                                  "(not in its wheel), the same TurboJPEG API simplejpeg bundles")
    missing["torchcodec"] = "not measured: needs the system FFmpeg libraries, which this machine lacks (PyAV bundles its own)"
    return found, missing


def codec_table(frames_by_set: dict[str, np.ndarray], qualities: list[int], repeats: int) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Every candidate on each set's frames: bytes/frame, MAE, PSNR, encode and decode ms/frame (one thread).

    Times are the best of ``repeats`` rounds, and each round times every candidate once, in turn:
    on a shared machine a neighbour's burst then slows one round of all candidates, not all rounds
    of one.
    """
    found, missing = candidates(qualities)
    rows = []
    for set_name, frames in frames_by_set.items():
        encoded, decoded = [], []
        encode_best = [float("inf")] * len(found)
        decode_best = [float("inf")] * len(found)
        for cand in found:
            encoded.append([cand.encode(frame) for frame in frames])
            decoded.append(np.empty_like(frames))
        for _ in tqdm(range(repeats), desc=f"codecs ({set_name})", unit="round", leave=False):
            for k, cand in enumerate(found):
                started = time.perf_counter()
                for frame in frames:
                    cand.encode(frame)
                encode_best[k] = min(encode_best[k], time.perf_counter() - started)
                started = time.perf_counter()
                cand.decode(encoded[k], decoded[k])
                decode_best[k] = min(decode_best[k], time.perf_counter() - started)
        for k, cand in enumerate(found):
            diff = decoded[k].astype(np.float64) - frames.astype(np.float64)
            mse = float((diff**2).mean())
            size = sum(len(r) for r in encoded[k])
            rows.append({"set": set_name, "library": cand.library, "codec": cand.codec, "quality": cand.quality,
                         "note": cand.note, "frames": len(frames), "bytes_per_frame": size / len(frames),
                         "ratio_vs_raw": size / frames.nbytes, "mae": float(np.abs(diff).mean()),
                         "psnr_db": 10 * np.log10(255**2 / mse) if mse else None,
                         "encode_ms_per_frame": 1e3 * encode_best[k] / len(frames),
                         "decode_ms_per_frame": 1e3 * decode_best[k] / len(frames)})
    return rows, missing


# ----------------------------------------------------------------------------- one set
def measure_set(name: str, sources: dict[str, list[Path]], args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Both stores of one set's videos, their bytes, pixel error, and the three loaders' throughput.

    ``sources``: the same videos encoded with different key-frame settings, by label; the first
    builds the stores, decord is timed on each.
    """
    from madapter.data.store.codec import JpegCodec

    paths = next(iter(sources.values()))
    started = time.perf_counter()
    videos = decode_frames(paths, args.frames_per_video, args.size)
    decode_s = time.perf_counter() - started
    names = [p.name for p in paths]
    builds = {fmt: write_store(work / f"{name}-{fmt}", fmt, args.quality, videos, names) for fmt in FORMATS}
    codec = JpegCodec(args.quality)
    started = time.perf_counter()
    for frames in videos:  # what the JPEG format adds to the decode stage, per video
        for frame in frames:
            codec.encode(frame)
    encode_s = time.perf_counter() - started
    error = pixel_error(builds["raw"].root, builds["jpeg"].root)
    loaders: dict[str, dict[str, Loader]] = {fmt: store_loaders(builds[fmt].root, args.num_frames, args.crop)
                                             for fmt in FORMATS}
    for label, encoded in sources.items():
        loaders[f"decord {label}"] = decord_loaders(encoded, args.num_frames, args.size, args.crop)
    speed = throughput(loaders, len(paths), args.repeats)
    per_video = {fmt: builds[fmt].bytes / len(paths) for fmt in FORMATS}
    fastest_decord = max(speed[f"decord {label}"]["clip"]["clips_per_s"] for label in sources)
    return {
        "videos": len(paths), "source": _source_note(name, args), "encodings": list(sources),
        "source_bytes_per_video": {label: sum(p.stat().st_size for p in encoded) / len(encoded)
                                   for label, encoded in sources.items()},
        "bytes_per_video": per_video,
        "uint8_bytes_per_video": args.frames_per_video * args.size**2 * RAW_BYTES_PER_FRAME,
        "size_ratio_jpeg_vs_raw": per_video["jpeg"] / per_video["raw"],
        "pixel_error": error,
        "decode_stage": {"decode_s_per_video": decode_s / len(paths),
                         "write_s_per_video": {fmt: builds[fmt].write_s / len(paths) for fmt in FORMATS},
                         "jpeg_encode_s_per_video": encode_s / len(paths)},
        "throughput": speed,
        "speedup_jpeg_vs_decord": speed["jpeg"]["clip"]["clips_per_s"] / fastest_decord,
        "speedup_raw_vs_decord": speed["raw"]["clip"]["clips_per_s"] / fastest_decord,
        "projected_gb": {dataset: {fmt: per_video[fmt] * n / 1e9 for fmt in FORMATS} for dataset, n in PROJECTIONS.items()},
    }


def _source_note(name: str, args: argparse.Namespace) -> str:
    if name == "natural":
        return (f"pan/zoom over photographs + moving blob + noise (sigma 2), 320x240, {args.source_frames} frames at "
                f"25 fps, h264 crf 23 veryfast")
    return f"built-in synthetic renderer, {args.size}x{args.size}, {args.synthetic_frames} frames at 8 fps, h264 crf 18"


# ----------------------------------------------------------------------------- report



def build_report(parts: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The JSON's numbers (the harness adds the provenance keys)."""
    natural = parts["sets"]["natural"]
    ok = "error" not in natural
    return {
        "setup": {"configuration": args.configuration, "size": args.size, "frames_per_video": args.frames_per_video,
                  "num_frames": args.num_frames, "crop": args.crop, "quality": args.quality, "repeats": args.repeats,
                  "videos_per_set": args.videos, "source_frames": args.source_frames,
                  "synthetic_frames": args.synthetic_frames, "gops": args.gops,
                  "threads": "1 torch thread, 1 decord thread, one process (per core)",
                  "throughput": "loaders interleaved clip by clip; per clip the fastest of the passes, summed",
                  "clip": f"ClipDataset(train=True): {args.num_frames} TSN frames, random {args.crop} crop, normalised float"},
        "sets": parts["sets"],
        "targets": {"size_ratio": TARGET_SIZE_RATIO, "speedup": TARGET_SPEEDUP,
                    "size_met": ok and natural["size_ratio_jpeg_vs_raw"] <= TARGET_SIZE_RATIO,
                    "speed_met": ok and natural["speedup_jpeg_vs_decord"] >= TARGET_SPEEDUP,
                    "judged_on": "the natural set; speed against decord's fastest encoding (GOP)"},
        "codecs": parts["codecs"], "codecs_not_measured": parts["codecs_missing"],
        "errors": parts["errors"],
        "headline": headline(natural, parts["codecs"], args) if ok else None,
    }


def headline(nat: dict[str, Any], codecs: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    """Every number the docs' prose quotes about the store (natural set), derived from the measured ones.

    The per-clip costs come from the two loader kinds: ``frames`` (the uint8 frames alone) and
    ``clip`` (frames + crop + normalisation): the JPEG decode is the difference of the two stores'
    ``frames`` times, the clip transform the difference of the uint8 store's ``clip`` and ``frames``.
    """
    tp = nat["throughput"]

    def ms(loader: str, kind: str) -> float:
        return 1e3 / tp[loader][kind]["clips_per_s"]

    jpeg_decode_ms = ms("jpeg", "frames") - ms("raw", "frames")
    return {
        "jpeg_size_fraction": 1 / nat["size_ratio_jpeg_vs_raw"],  # "1/10.1 of the uint8 store"
        "speedup_jpeg_vs_decord": nat["speedup_jpeg_vs_decord"], "speedup_raw_vs_decord": nat["speedup_raw_vs_decord"],
        "jpeg_vs_raw_clip_rate": tp["jpeg"]["clip"]["clips_per_s"] / tp["raw"]["clip"]["clips_per_s"],
        "jpeg_decode_ms_per_clip": jpeg_decode_ms, "jpeg_decode_ms_per_frame": jpeg_decode_ms / args.num_frames,
        "clip_transform_ms": ms("raw", "clip") - ms("raw", "frames"),
        "jpeg_pixel_mae": nat["pixel_error"]["mae"], "jpeg_psnr_db": nat["pixel_error"]["psnr_db"],
        "source_h264_mae": nat.get("source_codec_error", {}).get("mae"),
        "decode_ms_per_video": 1e3 * nat["decode_stage"]["decode_s_per_video"],
        "jpeg_encode_ms_per_video": 1e3 * nat["decode_stage"]["jpeg_encode_s_per_video"],
        "projected_gb": nat["projected_gb"],
        "codecs": codec_headline([row for row in codecs if row["set"] == "natural"], args.quality),
    }


def codec_headline(rows: list[dict[str, Any]], quality: int) -> dict[str, Any] | None:
    """The codec comparisons the docs' prose quotes (natural set): the store's codec against WebP at the
    closest error, the fastest JPEG decoder, and the highest quality that meets the size target."""
    store = [r for r in rows if r["note"] == "the store's codec" and r["quality"] == quality]
    if not store:
        return None
    ref = store[0]
    simple_420 = {r["quality"]: r for r in rows if r["library"].startswith("simplejpeg") and r["codec"] == "JPEG 4:2:0"}
    simple_444 = {r["quality"]: r for r in rows if r["library"].startswith("simplejpeg") and r["codec"] == "JPEG 4:4:4"}
    jpeg_at_q = [r for r in rows if r["quality"] == quality and r["codec"] == "JPEG 4:2:0"]
    webp = sorted((r for r in rows if r["codec"] == "WebP"), key=lambda r: abs(r["mae"] - ref["mae"]))
    within = [q for q, r in simple_420.items() if r["ratio_vs_raw"] <= TARGET_SIZE_RATIO]
    out: dict[str, Any] = {
        "store_codec": f"{ref['library']} {ref['codec']} q{quality}",
        "fastest_jpeg_decoder_at_quality": min(jpeg_at_q, key=lambda r: r["decode_ms_per_frame"])["library"],
        "highest_420_quality_within_size_target": max(within, default=None),
        "size_fraction_420_by_quality": {str(q): 1 / r["ratio_vs_raw"] for q, r in sorted(simple_420.items())},
        "size_fraction_444_at_quality": 1 / simple_444[quality]["ratio_vs_raw"] if quality in simple_444 else None,
    }
    if webp:
        w = webp[0]
        out["webp_closest_error"] = {
            "quality": w["quality"], "mae": w["mae"], "bytes_vs_store": w["bytes_per_frame"] / ref["bytes_per_frame"],
            "decode_time_vs_store": w["decode_ms_per_frame"] / ref["decode_ms_per_frame"],
            "encode_time_vs_store": w["encode_ms_per_frame"] / ref["encode_ms_per_frame"]}
    return out


def markdown(report: dict[str, Any], json_path: str) -> str:
    """The tables of docs/benchmarks.md, from the report alone."""
    s, t = report["setup"], report["targets"]
    lines = [
        f"| {s['videos_per_set']} videos per set, {s['frames_per_video']} stored frames at {s['size']} px | set | bytes per "
        f"video | vs uint8 | clips/s per core (training clip) | uint8 frames only | pixel MAE vs uint8 |",
        "|---|---|---|---|---|---|---|",
    ]
    for set_name, res in report["sets"].items():
        if "error" in res:
            lines.append(f"| failed: {res['error']} | {set_name} | | | | | |")
            continue
        tp, pe = res["throughput"], res["pixel_error"]
        raw_b = res["bytes_per_video"]["raw"]
        lines.append(f"| uint8 store (`decode.format: raw`) | {set_name} | {_mb(raw_b)} | 1 | {tp['raw']['clip']['clips_per_s']:.1f} | "
                     f"{tp['raw']['frames']['clips_per_s']:.0f} | 0 |")
        lines.append(f"| JPEG store (`jpeg`, quality {s['quality']}) | {set_name} | {_mb(res['bytes_per_video']['jpeg'])} | "
                     f"**1/{1 / res['size_ratio_jpeg_vs_raw']:.1f}** | **{tp['jpeg']['clip']['clips_per_s']:.1f}** | "
                     f"{tp['jpeg']['frames']['clips_per_s']:.0f} | {pe['mae']:.2f} (PSNR {pe['psnr_db']:.1f} dB) |")
        for label in res["encodings"]:
            lines.append(f"| decord from the source ({label}) | {set_name} | {_mb(res['source_bytes_per_video'][label])} "
                         f"(the video) | | {tp[f'decord {label}']['clip']['clips_per_s']:.1f} | "
                         f"{tp[f'decord {label}']['frames']['clips_per_s']:.0f} | (source) |")
    nat, h = report["sets"]["natural"], report["headline"]
    if h is None:  # the natural set failed: nothing below can be computed
        return "\n".join([*lines, "", footer(report, json_path)]) + "\n"
    lines += [
        "",
        f"Targets (natural set): JPEG store / uint8 store = 1/{1 / nat['size_ratio_jpeg_vs_raw']:.1f} (target <= 1/8: "
        f"{'met' if t['size_met'] else 'NOT met'}); JPEG store clips/s = {nat['speedup_jpeg_vs_decord']:.1f}x decord's "
        f"fastest GOP (target >= 2x: {'met' if t['speed_met'] else 'NOT met'}); the uint8 store: "
        f"{nat['speedup_raw_vs_decord']:.1f}x.",
        "",
        f"Per clip (natural set): JPEG decoding costs {h['jpeg_decode_ms_per_clip']:.1f} ms "
        f"({h['jpeg_decode_ms_per_frame']:.2f} ms a frame) over the memory-mapped uint8 store; cropping and normalising "
        f"to a float tensor {h['clip_transform_ms']:.1f} ms; per training clip the JPEG store runs at "
        f"{h['jpeg_vs_raw_clip_rate']:.2f}x the uint8 store's rate.",
        "",
        "| projected store | uint8 | JPEG (natural set) | JPEG (synthetic set) |",
        "|---|---|---|---|",
    ]
    for dataset in PROJECTIONS:
        syn_set = report["sets"].get("synthetic", {})
        syn = f"{syn_set['projected_gb'][dataset]['jpeg']:.1f} GB" if "projected_gb" in syn_set else "-"
        lines.append(f"| {dataset}, {PROJECTIONS[dataset]:,} videos | {nat['projected_gb'][dataset]['raw']:.0f} GB | "
                     f"{nat['projected_gb'][dataset]['jpeg']:.1f} GB | {syn} |")
    dec = nat["decode_stage"]
    lines += [
        "",
        f"Decode stage (natural set): decoding a source video to its {s['frames_per_video']} stored frames took "
        f"{1e3 * dec['decode_s_per_video']:.0f} ms, encoding them as JPEG {1e3 * dec['jpeg_encode_s_per_video']:.1f} ms. "
        + (f"For scale: the natural videos' own h264 (crf 23) is off the rendered frames by MAE "
           f"{nat['source_codec_error']['mae']:.2f} (PSNR {nat['source_codec_error']['psnr_db']:.1f} dB) at the stored frames, "
           f"before JPEG adds its {nat['pixel_error']['mae']:.2f}." if "source_codec_error" in nat else ""),
        "",
        "| codec (one core) | set | quality | bytes/frame | vs uint8 | MAE | PSNR | encode ms/frame | decode ms/frame | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["codecs"]:
        lines.append(f"| {row['library']} {row['codec']} | {row['set']} | {row['quality']} | {row['bytes_per_frame'] / 1e3:.1f} kB | "
                     f"1/{1 / row['ratio_vs_raw']:.1f} | {row['mae']:.2f} | {_num(row['psnr_db'])} dB | "
                     f"{row['encode_ms_per_frame']:.2f} | {row['decode_ms_per_frame']:.3f} | {row['note']} |")
    missing = "; ".join(f"{k}: {v}" for k, v in report["codecs_not_measured"].items())
    lines += ["", f"Not measured: {missing}."]
    lines += [f"Failed: {part}: {err}" for part, err in report["errors"].items()]
    return "\n".join([*lines, "", footer(report, json_path)]) + "\n"


def _mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _num(value: float | None) -> str:
    return "inf" if value is None else f"{value:.1f}"


def plot(report: dict[str, Any], path: Path) -> None:
    """Two panels per the issue's two targets: bytes per video (log) and training clips/s per core."""
    plt = pyplot()
    sets = [name for name, res in report["sets"].items() if "error" not in res]
    fig, (ax_bytes, ax_speed) = plt.subplots(1, 2, figsize=(11, 3.8))
    colours = {"raw": "#999999", "jpeg": "#2a7f62", "decord": "#c46f2b"}
    width = 0.8 / 3
    for k, set_name in enumerate(sets):
        res = report["sets"][set_name]
        for j, fmt in enumerate(FORMATS):
            ax_bytes.bar(k + (j - 0.5) * width, res["bytes_per_video"][fmt] / 1e6, width, color=colours[fmt],
                         label=fmt if k == 0 else None)
        keys = ["raw", "jpeg", *[f"decord {label}" for label in res["encodings"]]]
        w = 0.8 / len(keys)
        for j, key in enumerate(keys):
            ax_speed.bar(k + (j - (len(keys) - 1) / 2) * w, res["throughput"][key]["clip"]["clips_per_s"], w,
                         color=colours["decord" if key.startswith("decord") else key], alpha=1.0 if j < 3 else 0.6,
                         label=key if k == 0 else None)
    for ax in (ax_bytes, ax_speed):
        ax.set_xticks(range(len(sets)), sets)
        if sets:  # every set failed: nothing to label
            ax.legend(fontsize=8)
    ax_bytes.set_yscale("log")
    ax_bytes.set_ylabel("MB per video (log)")
    nat = report["sets"]["natural"]
    ax_speed.set_ylabel("training clips/s, one core")
    if "error" not in nat:
        ax_bytes.set_title(f"store size: JPEG = 1/{1 / nat['size_ratio_jpeg_vs_raw']:.1f} of uint8 (natural)", fontsize=10)
        ax_speed.set_title(f"read throughput: JPEG = {nat['speedup_jpeg_vs_decord']:.1f}x decord (natural)", fontsize=10)
    s = report["setup"]
    fig.suptitle(f"Frame store at {s['size']} px, {s['frames_per_video']} stored frames, clips of {s['num_frames']} "
                 f"(shared 2-core CPU, one run)", fontsize=10)
    save(fig, path)


# ----------------------------------------------------------------------------- driver
def run(args: argparse.Namespace) -> dict[str, Any]:
    """Both sets, then the codec table; a failing set or table is recorded as an error and the rest still runs.

    A :class:`BenchmarkError` (the machine cannot run the benchmark at all) still stops everything."""
    import torch

    torch.set_num_threads(1)  # per core
    work = args.work
    parts: dict[str, Any] = {"sets": {}, "errors": {}, "codecs": [], "codecs_missing": {}}
    makers = {"natural": lambda: make_natural_videos(work / "natural", args.videos, args.source_frames, args.gops, 0),
              "synthetic": lambda: {"x264 default GOP": make_synthetic_videos(work / "synthetic", args.videos,
                                                                              args.synthetic_frames, args.size, 0)}}
    for name, make in makers.items():
        logger.info("set %s: videos, stores, pixel error, throughput", name)
        with recorded(parts["errors"], f"set {name}"):
            parts["sets"][name] = measure_set(name, make(), args, work)
            if name == "natural":
                parts["sets"][name]["source_codec_error"] = source_codec_error(args.codec_videos, args, work / "natural-raw")
        if f"set {name}" in parts["errors"]:
            parts["sets"][name] = {"error": parts["errors"][f"set {name}"]}
    ok = [name for name, res in parts["sets"].items() if "error" not in res]
    if args.codecs and ok:
        with recorded(parts["errors"], "codec table"):
            parts["codecs"], parts["codecs_missing"] = codec_table(codec_frames(work, ok, args.codec_videos),
                                                                   args.qualities, args.codec_repeats)
    return build_report(parts, args)


def codec_frames(work: Path, sets: list[str], videos: int) -> dict[str, np.ndarray]:
    """The first ``videos`` videos' stored frames of each set's uint8 store: the codec table's input."""
    from madapter.data.store.frame_store import FrameStore

    frames = {}
    for name in sets:
        store = FrameStore(work / f"{name}-raw", "train")
        frames[name] = np.concatenate([store.frames(i) for i in range(min(videos, len(store)))])
    return frames


def options(parser: ArgumentParser) -> None:
    parser.add_argument("--videos", type=int, default=50, help="videos per set (issue 11: 50+)")
    parser.add_argument("--source-frames", type=int, default=175, help="frames per source video (UCF101's mean: ~7 s at 25 fps)")
    parser.add_argument("--synthetic-frames", type=int, default=32,
                        help="frames per synthetic video (8 fps: 4 s; the demo's have 16)")
    parser.add_argument("--size", type=int, default=240, help="decode.size: stored short side, px")
    parser.add_argument("--frames-per-video", type=int, default=16, help="decode.frames_per_video")
    parser.add_argument("--num-frames", type=int, default=8, help="model.num_frames: frames per training clip")
    parser.add_argument("--crop", type=int, default=224, help="training crop (the model's input size)")
    parser.add_argument("--quality", type=int, default=90, help="decode.quality of the JPEG store")
    parser.add_argument("--qualities", type=lambda s: [int(v) for v in s.split(",")], default=[75, 85, 90, 95],
                        help="qualities of the codec table")
    parser.add_argument("--gops", type=lambda s: [int(v) for v in s.split(",")], default=[12, 250],
                        help="key-frame intervals of the natural source videos (the first builds the stores)")
    parser.add_argument("--repeats", type=positive, default=4, help="passes over the videos; per clip the fastest counts")
    parser.add_argument("--codec-videos", type=int, default=6, help="videos per set whose frames the codec table uses")
    parser.add_argument("--codec-repeats", type=int, default=5, help="timing rounds of the codec table; the best is reported")
    parser.add_argument("--no-codecs", dest="codecs", action="store_false", help="skip the codec table")


def resolve(args: argparse.Namespace, parser: ArgumentParser) -> None:
    for key, value in {"smoke": SMOKE, "quick": QUICK}.get(args.configuration, {}).items():
        setattr(args, key, value)
    if args.smoke:
        args.source_frames = args.synthetic_frames = SMOKE["frames"]
    if args.videos < 2 or args.frames_per_video < args.num_frames or args.crop > args.size:
        parser.error("need --videos >= 2, --frames-per-video >= --num-frames, --crop <= --size")


BENCHMARK = Benchmark(
    "store", __doc__, run, markdown, plot, packages=("simplejpeg", "pillow", "torch", "torchvision", "decord", "av", "numpy"),
    quick=f"{', '.join(f'{k} {v}' for k, v in QUICK.items())}; same quantities", minutes=(3.0, 1.0),
    options=options, resolve=resolve, smoke=True, work_dir=True)

if __name__ == "__main__":
    raise SystemExit(BENCHMARK.main())
