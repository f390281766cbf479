"""The synthetic set: deterministic real mp4 files in the list layout, every class = its partner reversed."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import decord
import numpy as np
import pytest
import yaml

from madapter.config import ConfigError, SyntheticSection, params_from_dict
from madapter.data.acquire.synthetic import (
    CATALOGUE,
    encode_video,
    generate_synthetic,
    render,
    render_video,
    split_of,
)

CFG = SyntheticSection(videos_per_class=3, classes=4, num_frames=8, size=32)
REPO = Path(__file__).resolve().parents[2]

_GENERATE_AND_HASH = """
import hashlib, json, sys
from pathlib import Path
from madapter.config import SyntheticSection
from madapter.data.acquire.synthetic import generate_synthetic
root = generate_synthetic(Path(sys.argv[1]), SyntheticSection(**json.loads(sys.argv[2])), int(sys.argv[3]))
print(json.dumps({str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
                  for p in sorted(root.rglob("*")) if p.is_file()}))
"""


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_videos(tmp_path: Path) -> None:
    a = _digests(generate_synthetic(tmp_path / "a", CFG, seed=5))
    b = _digests(generate_synthetic(tmp_path / "b", CFG, seed=5))
    c = _digests(generate_synthetic(tmp_path / "c", CFG, seed=6))
    assert a == b
    videos = [k for k in a if k.endswith(".mp4")]
    assert len(videos) == 12 and all(a[k] != c[k] for k in videos)


@pytest.mark.integration
def test_fresh_processes_write_the_same_bytes(tmp_path: Path) -> None:
    """What two machines sharing a DVC remote do: generate the set in separate interpreters."""
    cfg = json.dumps(CFG.model_dump(mode="json"))
    procs = [subprocess.Popen([sys.executable, "-c", _GENERATE_AND_HASH, str(tmp_path / name), cfg, "5"],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("one", "two")]  # concurrently: they compete for the CPU, as on a busy machine
    digests = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        digests.append(json.loads(out.strip().splitlines()[-1]))
    assert len([k for k in digests[0] if k.endswith(".mp4")]) == 12
    assert digests[0] == digests[1]
    assert digests[0] == _digests(generate_synthetic(tmp_path / "here", CFG, seed=5))


def test_bytes_do_not_depend_on_the_cpu_features(tmp_path: Path) -> None:
    """x264 restricted to plain C (``asm=0``, a CPU without SIMD) writes the same file as this CPU's build."""
    for class_index in range(len(CATALOGUE)):
        frames = render_video(class_index, 0, SyntheticSection(num_frames=16, size=64), seed=1)
        here = encode_video(tmp_path / f"simd_{class_index}.mp4", frames, fps=8)
        plain_c = encode_video(tmp_path / f"c_{class_index}.mp4", frames, fps=8, options={"x264-params": "asm=0"})
        assert here.read_bytes() == plain_c.read_bytes(), CATALOGUE[class_index].name


def test_no_muxer_version_or_wall_clock_in_the_files(tmp_path: Path) -> None:
    """A PyAV/FFmpeg upgrade that leaves the encoder alone must not change every file's hash."""
    import av

    path = encode_video(tmp_path / "one.mp4", render_video(0, 0, CFG, seed=0), fps=8)
    with av.open(str(path)) as container:
        assert "encoder" not in container.metadata and "creation_time" not in container.metadata
    assert b"Lavf" not in path.read_bytes()


def test_list_layout_every_class_in_every_split(tmp_path: Path) -> None:
    root = generate_synthetic(tmp_path, CFG, seed=0)
    classes = (root / "classes.txt").read_text().split()
    assert classes == [c.name for c in CATALOGUE[:4]]
    seen: dict[str, set[int]] = {}
    for split in ("train", "val", "test"):
        for line in (root / f"{split}.txt").read_text().splitlines():
            rel, label = line.rsplit(maxsplit=1)
            assert (root / rel).is_file() and rel.startswith(classes[int(label)] + "/")
            seen.setdefault(split, set()).add(int(label))
    assert all(seen[s] == set(range(4)) for s in ("train", "val", "test"))


def test_real_h264_files_decord_reads(tmp_path: Path) -> None:
    root = generate_synthetic(tmp_path, CFG, seed=0)
    vr = decord.VideoReader(str(root / "grow/grow_000.mp4"), num_threads=1)
    assert len(vr) == CFG.num_frames
    assert vr[0].asnumpy().shape == (32, 32, 3)
    import av

    with av.open(str(root / "grow/grow_000.mp4")) as c:
        assert c.streams.video[0].codec_context.name == "h264"
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"


def _pooled(path: Path, frames: int) -> np.ndarray:
    """Decoded frames, 4x4 average-pooled: the per-pixel noise and codec error average out, shapes stay."""
    x = decord.VideoReader(str(path), num_threads=1).get_batch(list(range(frames))).asnumpy().astype(float)
    t, h, w, c = x.shape
    return x.reshape(t, h // 4, 4, w // 4, 4, c).mean(axis=(2, 4))


def test_every_pair_differs_only_in_frame_order(tmp_path: Path) -> None:
    """Why the set exists: averaged over time a class and its partner are the same video, so an
    order-blind model (mean-pooled frame features) cannot beat 50% on a pair."""
    cfg = SyntheticSection(videos_per_class=3, classes=12, num_frames=8, size=32)
    for pair in range(len(CATALOGUE) // 2):
        for video in range(3):
            f = render_video(2 * pair, video, cfg, seed=0)
            b = render_video(2 * pair + 1, video, cfg, seed=0)
            np.testing.assert_array_equal(b, f[::-1])
            np.testing.assert_array_equal(b.sum(axis=0, dtype=np.int64), f.sum(axis=0, dtype=np.int64))
            assert np.abs(f.astype(int) - b.astype(int)).mean() > 1, CATALOGUE[2 * pair].name  # order matters
    # ...and it survives encoding: decoded partner == decoded class reversed (up to codec noise)
    root = generate_synthetic(tmp_path, cfg, seed=0)
    for pair in range(len(CATALOGUE) // 2):
        forward, backward = CATALOGUE[2 * pair].name, CATALOGUE[2 * pair + 1].name
        f = _pooled(root / f"{forward}/{forward}_001.mp4", cfg.num_frames)
        b = _pooled(root / f"{backward}/{backward}_001.mp4", cfg.num_frames)
        reversed_error, forward_error = np.abs(f[::-1] - b).mean(), np.abs(f - b).mean()
        assert reversed_error < 2 and forward_error > 1.5 * reversed_error, (forward, reversed_error, forward_error)


def _object_track(frames: np.ndarray) -> dict[str, np.ndarray]:
    """Per-frame measurements of the bright object (every object channel >= 151, background <= 119)."""
    mask = frames.min(axis=-1) >= 140
    ys, xs = np.mgrid[0 : frames.shape[1], 0 : frames.shape[2]]
    area = mask.sum(axis=(1, 2)).astype(float)
    x = (mask * xs).sum(axis=(1, 2)) / np.maximum(area, 1)
    y = (mask * ys).sum(axis=(1, 2)) / np.maximum(area, 1)
    angle = np.arctan2(y - y.mean(), x - x.mean())  # y grows downwards: growing angle = clockwise on screen
    turned = float(np.sum((np.diff(angle) + math.pi) % (2 * math.pi) - math.pi))
    return {"x": x, "y": y, "area": area, "turn": np.array([0.0, turned]),
            "brightness": frames.min(axis=-1).astype(float).mean(axis=(1, 2))}


EXPECTED_CHANGE = {  # class -> (measurement, sign of last - first, smallest |change|)
    "move_right": ("x", 1, 10), "move_left": ("x", -1, 10), "move_down": ("y", 1, 10), "move_up": ("y", -1, 10),
    "grow": ("area", 1, 100), "shrink": ("area", -1, 100),
    "rotate_cw": ("turn", 1, math.radians(60)), "rotate_ccw": ("turn", -1, math.radians(60)),
    "orbit_cw": ("turn", 1, math.radians(120)), "orbit_ccw": ("turn", -1, math.radians(120)),
    "fade_in": ("brightness", 1, 2), "fade_out": ("brightness", -1, 2),
}


def test_class_names_say_what_the_pixels_do() -> None:
    """The names are true on screen (x to the right, y downwards): "cw" turns clockwise, etc."""
    assert sorted(c.name for c in CATALOGUE) == sorted(EXPECTED_CHANGE)
    cfg = SyntheticSection(num_frames=16, size=64)
    for class_index, spec in enumerate(CATALOGUE):
        key, sign, least = EXPECTED_CHANGE[spec.name]
        for video in range(6):
            track = _object_track(render_video(class_index, video, cfg, seed=3))[key]
            change = track[-1] - track[0]
            assert sign * change > least, (spec.name, video, key, change)


def test_appearance_is_drawn_independently_of_the_class() -> None:
    """Shape, colours, noise... come from a stream keyed by (seed, pair, video), never the class:
    the same pair and video index give the same look; other pairs draw their own."""
    cfg = SyntheticSection(num_frames=8, size=32)
    first_frames = [render_video(c, 0, cfg, seed=0) for c in range(len(CATALOGUE))]
    for pair in range(len(CATALOGUE) // 2):
        f, b = first_frames[2 * pair], first_frames[2 * pair + 1]
        np.testing.assert_array_equal(f[0], b[-1])
    backgrounds = {tuple(np.median(f[0].reshape(-1, 3), axis=0)) for f in first_frames[::2]}
    assert len(backgrounds) == len(CATALOGUE) // 2  # a different background colour for every pair


def test_default_demo_set_is_big_enough_for_a_90_percent_claim() -> None:
    """12 classes x 90 videos: >= 60 test videos (so a 90% top-1 is not luck), every class in every
    split; and params.yaml runs exactly these defaults."""
    cfg = SyntheticSection()
    assert cfg.classes == len(CATALOGUE) == 12 and cfg.num_frames == 16 and cfg.size == 64
    per_split: dict[str, Counter[int]] = {"train": Counter(), "val": Counter(), "test": Counter()}
    for class_index in range(cfg.classes):
        for video in range(cfg.videos_per_class):
            per_split[split_of(video, cfg.videos_per_class, 0, class_index)][class_index] += 1
    assert sum(per_split["test"].values()) >= 60 and sum(per_split["val"].values()) >= 60
    assert all(set(counts) == set(range(cfg.classes)) for counts in per_split.values())
    params = params_from_dict(yaml.safe_load((REPO / "params.yaml").read_text()), "params.yaml")
    assert params.dataset.synthetic == cfg


def test_class_count_is_whole_pairs_of_the_catalogue() -> None:
    assert SyntheticSection(classes=len(CATALOGUE)).classes == 12
    for bad in (3, len(CATALOGUE) + 2):
        with pytest.raises(ConfigError, match="dataset.synthetic.classes"):
            params_from_dict({"dataset": {"synthetic": {"classes": bad}}}, "params.yaml")


def _background_spread(frame: np.ndarray) -> float:
    """Per-channel spread of the pixels darker than any object (the background's texture and noise)."""
    return float(frame[frame.max(axis=-1) < 140].astype(float).std(axis=0).mean())


def test_textured_set_is_the_order_set_over_busy_scenes() -> None:
    """``task: textured``: twins still differ only in frame order, the background is far busier than
    the order set's, and a static distractor as bright as the object is there even when the object
    is not (``fade_in``'s first frame)."""
    textured = SyntheticSection(task="textured", classes=12, num_frames=8, size=48)
    plain = SyntheticSection(task="order", classes=12, num_frames=8, size=48)
    for pair in range(len(CATALOGUE) // 2):
        f = render(2 * pair, 0, textured, seed=0)
        np.testing.assert_array_equal(render(2 * pair + 1, 0, textured, seed=0), f[::-1])
    busy = [_background_spread(render(0, v, textured, seed=0)[0]) for v in range(4)]
    flat = [_background_spread(render(0, v, plain, seed=0)[0]) for v in range(4)]
    assert min(busy) > 2 * max(flat), (busy, flat)
    fade_in = [c.name for c in CATALOGUE].index("fade_in")
    for video in range(4):
        first = render(fade_in, video, textured, seed=0)[0]
        assert (first.min(axis=-1) >= 150).sum() > 20, video  # the distractor: bright, and present from the start
