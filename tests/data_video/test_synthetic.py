"""The synthetic set: deterministic real mp4 files in the list layout, motion pairs = reversed frames."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import decord
import numpy as np

from madapter.config import SyntheticSection
from madapter.data.acquire.synthetic import CATALOGUE, encode_video, generate_synthetic, render_video

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
        frames = render_video(class_index, 0, SyntheticSection(classes=8, num_frames=16, size=64), seed=1)
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


def test_motion_pairs_differ_only_in_frame_order(tmp_path: Path) -> None:
    for forward, backward in ((0, 1), (2, 3)):
        for video in range(3):
            f = render_video(forward, video, CFG, seed=0)
            b = render_video(backward, video, CFG, seed=0)
            np.testing.assert_array_equal(b, f[::-1])
            assert np.abs(f.astype(int) - b.astype(int)).mean() > 1  # ...and order matters
    # and it survives encoding: decoded move_left == decoded move_right reversed (up to codec noise)
    root = generate_synthetic(tmp_path, CFG, seed=0)
    right = decord.VideoReader(str(root / "move_right/move_right_001.mp4"), num_threads=1)
    left = decord.VideoReader(str(root / "move_left/move_left_001.mp4"), num_threads=1)
    r = right.get_batch(list(range(8))).asnumpy().astype(int)
    l_ = left.get_batch(list(range(8))).asnumpy().astype(int)
    assert np.abs(r[::-1] - l_).mean() < 3 < np.abs(r - l_).mean()


def test_appearance_classes_differ_in_shape() -> None:
    cfg = SyntheticSection(videos_per_class=3, classes=6, num_frames=8, size=32)
    square = render_video(4, 0, cfg, seed=0)[0].astype(int)
    circle = render_video(5, 0, cfg, seed=0)[0].astype(int)

    def filled_fraction(frame: np.ndarray) -> float:
        """Object pixels / bounding-box pixels (object channels >= 150, background <= 132)."""
        mask = frame.sum(-1) >= 450
        ys, xs = np.nonzero(mask)
        return mask.sum() / ((np.ptp(ys) + 1) * (np.ptp(xs) + 1))

    assert filled_fraction(square) > 0.95 and filled_fraction(circle) < 0.85
