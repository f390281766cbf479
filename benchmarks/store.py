"""The frame store's formats: bytes per video, training read throughput and pixel error, in one run.

Three ways to feed training the same videos, in one process: ``raw`` (the uint8 store,
``decode.format: raw``: memory-mapped ``.npy`` shards), ``jpeg`` (the compressed store: only the
clip's JPEG frames decoded, libjpeg-turbo through simplejpeg) and ``decord`` (no store: each clip
opens its SOURCE video and seeks its frames, the MMAction2 default).  Both stores hold the SAME
frames (decoded once by the decode stage's function, written by the real ``ShardWriter``); a clip
is what training gets (``ClipDataset(train=True)``: TSN frames, random crop, normalised floats),
and the decord path samples, crops and normalises alike.  Throughput is per core (one process,
one torch and one decord thread); the loaders take turns clip by clip (a neighbour's burst hits
all of them) and each clip counts its fastest of ``--repeats`` passes.  The files were just
written, so the page cache is warm: this measures CPU, not disk.

Two sets of source videos: ``natural`` (the numbers to quote: pans and zooms over photographs that
ship with matplotlib and scikit-learn, a moving blob and sensor noise; 320x240 like UCF101, h264
crf 23, a key frame every ``--gops`` frames: 12 is decord's best case, 250 x264's default) and
``synthetic`` (the demo's renderer: flat shapes, which compress far better than real footage).
Also: the JPEG store's pixel error, the decode stage's added encoding time, the projected disk for
UCF101 and Kinetics-400, and a codec table (libraries x qualities on the same frames, one core).

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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks.harness import (
    ArgumentParser,
    Benchmark,
    BenchmarkError,
    fmt,
    in_processes,
    int_list,
    interleaved,
    package_version,
    page,
    positive,
    pyplot,
    recorded,
    save,
    table,
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
SMOKE = {"videos": 4, "source_frames": 24, "synthetic_frames": 24, "size": 64, "crop": 56,
         "frames_per_video": 8, "num_frames": 4, "repeats": 1, "gops": [12], "qualities": [90],
         "codec_videos": 2, "codec_repeats": 1}
Loader = Callable[[int, int], Any]
"""``(video index, epoch) -> training clip``."""


# ----------------------------------------------------------------------------- source videos
def photographs() -> list[tuple[str, np.ndarray]]:
    """Natural photographs that ship with installed packages (no download): name and RGB array."""
    import matplotlib
    from PIL import Image

    candidates = [Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"]
    try:
        import sklearn.datasets

        images = Path(sklearn.datasets.__file__).parent / "images"
        candidates += [images / "china.jpg", images / "flower.jpg"]
    except ImportError:
        logger.warning("scikit-learn not installed: the natural set uses one photograph only")
    found = [(p.name, np.array(Image.open(p).convert("RGB"))) for p in candidates if p.is_file()]
    if not found:
        raise BenchmarkError("store.py: no sample photograph found (matplotlib's grace_hopper.jpg); "
                             "reinstall matplotlib")
    return found


def natural_clip(rng: np.random.Generator, photo: np.ndarray, frames: int, height: int, width: int) -> np.ndarray:
    """A camera panning and zooming over ``photo``, a soft blob crossing it, sensor noise: uint8 [T, H, W, 3].
    Real footage is neither flat nor white noise: natural image statistics, every frame different."""
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
        win_w = min(pw, min(ph, (scale0 + a * (scale1 - scale0)) * ph) * aspect)
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


def make_natural_videos(folder: Path, count: int, frames: int, gops: list[int]) -> dict[str, list[Path]]:
    """``count`` natural-looking 320x240 h264 videos, each rendered once (seeded by its index) and encoded
    with a key frame every ``gop`` frames for each of ``gops``: ``{"GOP <n>": paths}``.  Set-up, not
    measured, but most of the run's time: in :data:`RENDER_PROCESSES` processes."""
    targets = [{gop: folder / f"gop{gop}-{frames}f" / f"natural_{i:03d}.mp4" for gop in gops} for i in range(count)]
    todo = [(i, frames, t) for i, t in enumerate(targets) if not all(p.is_file() for p in t.values())]
    processes = RENDER_PROCESSES if len(todo) >= 4 * RENDER_PROCESSES else 1  # a few: not worth starting any
    rendered = in_processes(_render_natural, todo, processes)
    list(tqdm(rendered, total=len(todo), desc="natural videos", unit="video", leave=False))
    return {f"GOP {gop}": [t[gop] for t in targets] for gop in gops}


def _render_natural(i: int, frames: int, targets: dict[int, Path]) -> None:
    """One natural video (index ``i``, its own seed), encoded once per GOP."""
    from madapter.data.acquire.synthetic import encode_video

    photos = photographs()
    clip = natural_clip(np.random.default_rng([0, i]), photos[i % len(photos)][1], frames, 240, 320)
    for gop, path in targets.items():
        encode_video(path, clip, fps=25, options={"crf": "23", "preset": "veryfast",
                                                  "x264-params": f"keyint={gop}:min-keyint={gop}"})


def make_synthetic_videos(folder: Path, count: int, frames: int, size: int) -> list[Path]:
    """``count`` videos of the built-in synthetic set at ``size`` px (every class in turn)."""
    from madapter.config import SyntheticSection
    from madapter.data.acquire.synthetic import CATALOGUE, encode_video, render_video

    cfg = SyntheticSection(classes=len(CATALOGUE) - len(CATALOGUE) % 2, videos_per_class=3, num_frames=frames,
                           size=size, fps=8)
    paths = [folder / f"{size}px-{frames}f" / f"synthetic_{i:03d}.mp4" for i in range(count)]
    for i, path in enumerate(tqdm(paths, desc="synthetic videos", unit="video", leave=False)):
        if not path.is_file():  # a kept --work-dir: same seed, same video
            encode_video(path, render_video(i % cfg.classes, i // cfg.classes, cfg, 0), cfg.fps)
    return paths


# ----------------------------------------------------------------------------- the two stores
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


def write_store(root: Path, kind: str, quality: int, videos: list[np.ndarray],
                names: list[str]) -> tuple[int, float]:
    """One store of ``videos`` in format ``kind`` through the real writer and metadata: bytes, seconds."""
    from madapter.config import DecodeSection
    from madapter.data.store.frame_store import ShardWriter, format_meta, frame_codec, write_store_meta

    frames_per_video, size = videos[0].shape[0], videos[0].shape[1]
    cfg = DecodeSection(format=kind, quality=quality, frames_per_video=frames_per_video, size=size,
                        shard_size=256)
    started = time.perf_counter()
    writer = ShardWriter(root / "train", cfg.shard_size, frames_per_video, size, frame_codec(cfg))
    for name, frames in zip(names, videos, strict=True):
        writer.add(name, 0, "c", frames, len(frames))
    summary = writer.close()
    seconds = time.perf_counter() - started
    write_store_meta(root, {"classes": ["c"], "frames_per_video": frames_per_video, "size": size, **format_meta(cfg),
                            "bytes": summary.bytes})
    return summary.bytes, seconds


def error_stats(pairs: Iterable[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Pixel error of every ``(frames, reference)`` pair, together: MAE (0-255), largest error, PSNR."""
    abs_sum, sq_sum, count, worst = 0.0, 0.0, 0, 0
    for frames, reference in pairs:
        diff = frames.astype(np.float64) - reference.astype(np.float64)
        abs_sum += float(np.abs(diff).sum())
        sq_sum += float((diff**2).sum())
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

    photos, store = photographs(), FrameStore(raw_root, "train")
    videos = min(count, len(store))

    def pair(i: int) -> tuple[np.ndarray, np.ndarray]:
        clip = natural_clip(np.random.default_rng([0, i]), photos[i % len(photos)][1], args.source_frames, 240, 320)
        picked = clip[uniform_grid(len(clip), args.frames_per_video)]
        return store.frames(i), resize_and_center_crop(picked, args.size)

    error = error_stats(pair(i) for i in range(videos))
    return {"mae": error["mae"], "psnr_db": error["psnr_db"], "videos": videos}


# ----------------------------------------------------------------------------- training read throughput
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
    """clips/s of every loader over all videos, taking turns clip by clip (:func:`interleaved`):
    ``clips_per_s`` over the sum, per clip, of its fastest of ``repeats`` passes (each draws other random
    frames: the cheapest seeks win, which favours decord), ``clips_per_s_median_pass`` the median pass's."""
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


def one_by_one(decode: Callable[[bytes, np.ndarray], None]) -> Callable[[list[bytes], np.ndarray], None]:
    """A decoder of one record into its output frame, as a :class:`Candidate`'s decoder of a list."""
    def decode_all(records: list[bytes], out: np.ndarray) -> None:
        for k, record in enumerate(records):
            decode(record, out[k])

    return decode_all


def candidates(qualities: list[int]) -> tuple[list[Candidate], dict[str, str]]:
    """Every candidate importable here, and why the others are missing."""
    from PIL import Image

    from madapter.data.store.codec import JpegCodec

    found: list[Candidate] = []
    missing: dict[str, str] = {}
    for q in qualities:
        for sub in ("420", "444"):
            codec = JpegCodec(q, sub)
            found.append(Candidate(f"simplejpeg {package_version('simplejpeg')}", f"JPEG 4:{sub[1]}:{sub[2]}", q,
                                   codec.encode, one_by_one(codec.decode_into),
                                   "the store's codec" if sub == "420" else ""))
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

        found += [Candidate(f"torchvision {package_version('torchvision')}", "JPEG 4:2:0", q,
                            lambda f, q=q: tv_encode(f, q), tv_decode, "deprecated since 0.29 (torchcodec)")
                  for q in qualities]
    except ImportError as err:
        missing["torchvision.io"] = str(err)

    def pil_encode(frame: np.ndarray, kind: str, q: int) -> bytes:
        buffer = io.BytesIO()
        options = {"subsampling": 2} if kind == "JPEG" else {"method": 4}
        Image.fromarray(frame).save(buffer, format=kind, quality=q, **options)
        return buffer.getvalue()

    def pil_decode(record: bytes, out: np.ndarray) -> None:
        with Image.open(io.BytesIO(record)) as image:
            out[...] = np.asarray(image.convert("RGB"))

    pillow = f"Pillow {package_version('pillow')}"
    for q in qualities:
        found.append(Candidate(pillow, "JPEG 4:2:0", q, lambda f, q=q: pil_encode(f, "JPEG", q),
                               one_by_one(pil_decode)))
        found.append(Candidate(pillow, "WebP", q, lambda f, q=q: pil_encode(f, "WEBP", q),
                               one_by_one(pil_decode), "lossy, method 4"))
    try:
        import turbojpeg  # noqa: F401

        missing["PyTurboJPEG"] = "installed but not wired in: same libjpeg-turbo TurboJPEG API as simplejpeg"
    except (ImportError, OSError) as err:
        missing["PyTurboJPEG"] = (f"not measured ({type(err).__name__}): it loads a system libturbojpeg through ctypes "
                                  "(not in its wheel), the same TurboJPEG API simplejpeg bundles")
    missing["torchcodec"] = "not measured: needs the system FFmpeg libraries, which this machine lacks (PyAV bundles its own)"
    return found, missing


def codec_table(frames_by_set: dict[str, np.ndarray], qualities: list[int],
                repeats: int) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Every candidate on each set's frames: bytes/frame, MAE, PSNR, encode and decode ms/frame (one thread).
    The best of ``repeats`` rounds, each timing every candidate in turn (a burst slows one round of all)."""
    found, missing = candidates(qualities)
    rows = []
    for set_name, frames in frames_by_set.items():
        encoded = [[cand.encode(frame) for frame in frames] for cand in found]
        decoded = [np.empty_like(frames) for _ in found]
        encode_best, decode_best = [float("inf")] * len(found), [float("inf")] * len(found)
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
            error, size = error_stats([(decoded[k], frames)]), sum(len(r) for r in encoded[k])
            rows.append({"set": set_name, "library": cand.library, "codec": cand.codec, "quality": cand.quality,
                         "note": cand.note, "frames": len(frames), "bytes_per_frame": size / len(frames),
                         "ratio_vs_raw": size / frames.nbytes, "mae": error["mae"],
                         "psnr_db": error["psnr_db"] if error["psnr_db"] != float("inf") else None,
                         "encode_ms_per_frame": 1e3 * encode_best[k] / len(frames),
                         "decode_ms_per_frame": 1e3 * decode_best[k] / len(frames)})
    return rows, missing


# ----------------------------------------------------------------------------- one set
def source_videos(name: str, args: argparse.Namespace) -> tuple[dict[str, list[Path]], str]:
    """A set's source videos by encoding label (the natural set: one per GOP, the same content), and what
    they are."""
    if name == "natural":
        return (make_natural_videos(args.work / "natural", args.videos, args.source_frames, args.gops),
                f"pan/zoom over photographs + moving blob + noise (sigma 2), 320x240, {args.source_frames} "
                "frames at 25 fps, h264 crf 23 veryfast")
    paths = make_synthetic_videos(args.work / "synthetic", args.videos, args.synthetic_frames, args.size)
    return ({"x264 default GOP": paths}, f"built-in synthetic renderer, {args.size}x{args.size}, "
            f"{args.synthetic_frames} frames at 8 fps, h264 crf 18")


def measure_set(name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Both stores of one set's videos (from its first encoding), their bytes, pixel error, and the
    loaders' throughput (decord on each encoding)."""
    from madapter.data.store.codec import JpegCodec
    from madapter.data.store.frame_store import FrameStore

    sources, note = source_videos(name, args)
    paths = next(iter(sources.values()))
    started = time.perf_counter()
    videos = decode_frames(paths, args.frames_per_video, args.size)
    decode_s = time.perf_counter() - started
    roots = {kind: args.work / f"{name}-{kind}" for kind in FORMATS}
    builds = {kind: write_store(roots[kind], kind, args.quality, videos, [p.name for p in paths])
              for kind in FORMATS}
    codec = JpegCodec(args.quality)
    started = time.perf_counter()
    for frames in videos:  # what the JPEG format adds to the decode stage, per video
        for frame in frames:
            codec.encode(frame)
    encode_s = time.perf_counter() - started
    raw, jpeg = (FrameStore(roots[kind], "train") for kind in FORMATS)
    error = error_stats((jpeg.frames(i), raw.frames(i)) for i in range(len(raw)))
    loaders = {kind: store_loaders(roots[kind], args.num_frames, args.crop) for kind in FORMATS}
    for label, encoded in sources.items():
        loaders[f"decord {label}"] = decord_loaders(encoded, args.num_frames, args.size, args.crop)
    speed = throughput(loaders, len(paths), args.repeats)
    per_video = {kind: builds[kind][0] / len(paths) for kind in FORMATS}
    fastest_decord = max(speed[f"decord {label}"]["clip"]["clips_per_s"] for label in sources)
    result = {
        "videos": len(paths), "source": note, "encodings": list(sources),
        "source_bytes_per_video": {label: sum(p.stat().st_size for p in encoded) / len(encoded)
                                   for label, encoded in sources.items()},
        "bytes_per_video": per_video,
        "uint8_bytes_per_video": args.frames_per_video * args.size**2 * RAW_BYTES_PER_FRAME,
        "size_ratio_jpeg_vs_raw": per_video["jpeg"] / per_video["raw"],
        "pixel_error": error,
        "decode_stage": {"decode_s_per_video": decode_s / len(paths),
                         "write_s_per_video": {kind: builds[kind][1] / len(paths) for kind in FORMATS},
                         "jpeg_encode_s_per_video": encode_s / len(paths)},
        "throughput": speed,
        "speedup_jpeg_vs_decord": speed["jpeg"]["clip"]["clips_per_s"] / fastest_decord,
        "speedup_raw_vs_decord": speed["raw"]["clip"]["clips_per_s"] / fastest_decord,
        "projected_gb": {dataset: {kind: per_video[kind] * n / 1e9 for kind in FORMATS}
                         for dataset, n in PROJECTIONS.items()},
    }
    if name == "natural":
        result["source_codec_error"] = source_codec_error(args.codec_videos, args, roots["raw"])
    return result


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
                  "clip": f"ClipDataset(train=True): {args.num_frames} TSN frames, random {args.crop} crop, "
                          "normalised float"},
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
    Per clip, the JPEG decode is the difference of the two stores' ``frames`` (uint8 frames alone) times,
    the clip transform (crop, normalisation) that of the uint8 store's ``clip`` and ``frames`` times."""
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
    rows = []
    for set_name, res in report["sets"].items():
        if "error" in res:
            rows.append([f"failed: {res['error']}", set_name, None, None, None, None, None])
            continue
        tp, pe, size = res["throughput"], res["pixel_error"], res["bytes_per_video"]
        rows += [["uint8 store (`decode.format: raw`)", set_name, _mb(size["raw"]), 1, *_rates(tp["raw"]), 0],
                 [f"JPEG store (`jpeg`, quality {s['quality']})", set_name, _mb(size["jpeg"]),
                  f"**1/{1 / res['size_ratio_jpeg_vs_raw']:.1f}**", *_rates(tp["jpeg"], "**"),
                  f"{pe['mae']:.2f} (PSNR {pe['psnr_db']:.1f} dB)"]]
        rows += [[f"decord from the source ({label})", set_name,
                  f"{_mb(res['source_bytes_per_video'][label])} (the video)", None,
                  *_rates(tp[f"decord {label}"]), "(source)"] for label in res["encodings"]]
    head = [f"{s['videos_per_set']} videos per set, {s['frames_per_video']} stored frames at {s['size']} px",
            "set", "bytes per video", "vs uint8", "clips/s per core (training clip)", "uint8 frames only",
            "pixel MAE vs uint8"]
    lines = table(head, rows)
    nat, h = report["sets"]["natural"], report["headline"]
    if h is None:  # the natural set failed: nothing below can be computed
        return page(lines, report, json_path)
    syn = report["sets"].get("synthetic", {})
    projected = [[f"{dataset}, {n:,} videos", f"{nat['projected_gb'][dataset]['raw']:.0f} GB",
                  f"{nat['projected_gb'][dataset]['jpeg']:.1f} GB",
                  f"{syn['projected_gb'][dataset]['jpeg']:.1f} GB" if "projected_gb" in syn else "-"]
                 for dataset, n in PROJECTIONS.items()]
    codecs = [[f"{r['library']} {r['codec']}", r["set"], r["quality"], f"{r['bytes_per_frame'] / 1e3:.1f} kB",
               f"1/{1 / r['ratio_vs_raw']:.1f}", f"{r['mae']:.2f}", fmt(r["psnr_db"], ".1f", " dB", "inf dB"),
               f"{r['encode_ms_per_frame']:.2f}", f"{r['decode_ms_per_frame']:.3f}", r["note"]]
              for r in report["codecs"]]
    dec, source = nat["decode_stage"], nat.get("source_codec_error")
    for_scale = (f"For scale: the natural videos' own h264 (crf 23) is off the rendered frames by MAE "
                 f"{source['mae']:.2f} (PSNR {source['psnr_db']:.1f} dB) at the stored frames, before JPEG "
                 f"adds its {nat['pixel_error']['mae']:.2f}." if source else "")
    missing = "; ".join(f"{k}: {v}" for k, v in report["codecs_not_measured"].items())
    lines += [
        "",
        f"Targets (natural set): JPEG store / uint8 store = 1/{1 / nat['size_ratio_jpeg_vs_raw']:.1f} "
        f"(target <= 1/8: {_met(t['size_met'])}); JPEG store clips/s = {nat['speedup_jpeg_vs_decord']:.1f}x "
        f"decord's fastest GOP (target >= 2x: {_met(t['speed_met'])}); the uint8 store: "
        f"{nat['speedup_raw_vs_decord']:.1f}x.",
        "",
        f"Per clip (natural set): JPEG decoding costs {h['jpeg_decode_ms_per_clip']:.1f} ms "
        f"({h['jpeg_decode_ms_per_frame']:.2f} ms a frame) over the memory-mapped uint8 store; cropping and "
        f"normalising to a float tensor {h['clip_transform_ms']:.1f} ms; per training clip the JPEG store "
        f"runs at {h['jpeg_vs_raw_clip_rate']:.2f}x the uint8 store's rate.",
        "",
        *table(["projected store", "uint8", "JPEG (natural set)", "JPEG (synthetic set)"], projected),
        "",
        f"Decode stage (natural set): decoding a source video to its {s['frames_per_video']} stored frames took "
        f"{1e3 * dec['decode_s_per_video']:.0f} ms, encoding them as JPEG "
        f"{1e3 * dec['jpeg_encode_s_per_video']:.1f} ms. {for_scale}",
        "",
        *table(["codec (one core)", "set", "quality", "bytes/frame", "vs uint8", "MAE", "PSNR",
                "encode ms/frame", "decode ms/frame", "note"], codecs),
        "",
        f"Not measured: {missing}.",
        *(f"Failed: {part}: {err}" for part, err in report["errors"].items()),
    ]
    return page(lines, report, json_path)


def _rates(loader: dict[str, Any], bold: str = "") -> list[str]:
    """A loader's clips/s: the training clip's (``bold`` around it) and the uint8 frames alone's."""
    return [f"{bold}{loader['clip']['clips_per_s']:.1f}{bold}", f"{loader['frames']['clips_per_s']:.0f}"]


def _met(met: bool) -> str:
    return "met" if met else "NOT met"


def _mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def plot(report: dict[str, Any], path: Path) -> None:
    """Two panels per the issue's two targets: bytes per video (log) and training clips/s per core."""
    plt = pyplot()
    sets = [name for name, res in report["sets"].items() if "error" not in res]
    fig, (ax_bytes, ax_speed) = plt.subplots(1, 2, figsize=(11, 3.8))
    colours = {"raw": "#999999", "jpeg": "#2a7f62", "decord": "#c46f2b"}
    width = 0.8 / 3
    for k, set_name in enumerate(sets):
        res = report["sets"][set_name]
        for j, kind in enumerate(FORMATS):
            ax_bytes.bar(k + (j - 0.5) * width, res["bytes_per_video"][kind] / 1e6, width,
                         color=colours[kind], label=kind if k == 0 else None)
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
    """Both sets, then the codec table; a failed set or table is recorded as an error, the rest still runs."""
    import torch

    from madapter.data.store.frame_store import FrameStore

    torch.set_num_threads(1)  # per core
    parts: dict[str, Any] = {"sets": {}, "errors": {}, "codecs": [], "codecs_missing": {}}
    for name in ("natural", "synthetic"):
        logger.info("set %s: videos, stores, pixel error, throughput", name)
        with recorded(parts["errors"], f"set {name}"):
            parts["sets"][name] = measure_set(name, args)
        if f"set {name}" in parts["errors"]:
            parts["sets"][name] = {"error": parts["errors"][f"set {name}"]}
    ok = [name for name, res in parts["sets"].items() if "error" not in res]
    if args.codecs and ok:
        with recorded(parts["errors"], "codec table"):
            stores = {name: FrameStore(args.work / f"{name}-raw", "train") for name in ok}
            frames = {name: np.concatenate([s.frames(i) for i in range(min(args.codec_videos, len(s)))])
                      for name, s in stores.items()}  # each set's first videos' stored frames
            parts["codecs"], parts["codecs_missing"] = codec_table(frames, args.qualities, args.codec_repeats)
    return build_report(parts, args)


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
    parser.add_argument("--qualities", type=int_list, default=[75, 85, 90, 95],
                        help="qualities of the codec table")
    parser.add_argument("--gops", type=int_list, default=[12, 250],
                        help="key-frame intervals of the natural source videos (the first builds the stores)")
    parser.add_argument("--repeats", type=positive, default=4, help="passes over the videos; per clip the fastest counts")
    parser.add_argument("--codec-videos", type=int, default=6, help="videos per set whose frames the codec table uses")
    parser.add_argument("--codec-repeats", type=int, default=5, help="timing rounds of the codec table; the best is reported")
    parser.add_argument("--no-codecs", dest="codecs", action="store_false", help="skip the codec table")


def resolve(args: argparse.Namespace, parser: ArgumentParser) -> None:
    for key, value in {"smoke": SMOKE, "quick": QUICK}.get(args.configuration, {}).items():
        setattr(args, key, value)
    if args.videos < 2 or args.frames_per_video < args.num_frames or args.crop > args.size:
        parser.error("need --videos >= 2, --frames-per-video >= --num-frames, --crop <= --size")


BENCHMARK = Benchmark(
    "store", __doc__, run, markdown, plot, packages=("simplejpeg", "pillow", "torch", "torchvision", "decord", "av", "numpy"),
    quick=f"{', '.join(f'{k} {v}' for k, v in QUICK.items())}; same quantities", minutes=(3.0, 1.0),
    options=options, resolve=resolve, smoke=True, work_dir=True)

if __name__ == "__main__":
    raise SystemExit(BENCHMARK.main())
