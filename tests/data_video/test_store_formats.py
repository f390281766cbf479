"""The frame store's two formats: JPEG (the default) against raw uint8, on the same decoded videos.

What must hold for training to switch formats without noticing: the same videos, labels and
frame grid; pixels within a stated tolerance of the raw store (which is bit-exact to the decode
stage's frames); the same bytes for the same inputs (DVC hashes them); a damaged shard is one
line naming the file and the fix, never a crash deep in a decoder or a clip of garbage; a pickled
store (sent to DataLoader / Ray workers) carries and opens nothing.
"""

from __future__ import annotations

import json
import pickle
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest

from madapter.config import ConfigError, params_from_dict
from madapter.data.acquire.synthetic import generate_synthetic
from madapter.data.clips import ClipDataset
from madapter.data.index.schema import read_index
from madapter.data.store.codec import JpegCodec
from madapter.data.store.decode import DecodeJob, decode_dataset, decode_video
from madapter.data.store.frame_store import FrameStore, ShardWriter, StoreError, write_store_meta
from madapter.data.store.scan import scan_videos
from madapter.paths import StagePaths

from .conftest import index_from_lists, make_params

JPEG_VS_RAW_MAE = 3.0
"""Mean absolute error (0-255) allowed per video between the JPEG store (quality 90, 4:2:0) and the
raw store.  Measured 1.7-2.6 on these 32 px synthetic videos: the renderer's per-pixel noise and
fine texture are exactly what JPEG quantises away, and its shapes' hard colour edges are JPEG's worst
case (chroma at half resolution smears a 1-2 px rim).  On 240 px natural-looking video it is 2.3
(benchmarks/store.py).  A slipped setting shows: quality 50 measures 2.9-4.2 on these videos; a
wrong frame, offset or channel order is off by tens of levels."""
JPEG_VS_RAW_MAX_ABS = 64
"""Worst single pixel allowed: a ringing pixel next to an edge may be off by a few tens of levels,
a wrong frame, channel order or offset is off by ~100+ over whole regions."""
MEAN, STD = (0.5,) * 3, (0.25,) * 3


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One synthetic dataset decoded by the real stage into a ``jpeg`` and a ``raw`` store."""
    root = tmp_path_factory.mktemp("formats")
    params = {fmt: make_params(root / fmt, decode={"format": fmt}) for fmt in ("jpeg", "raw")}
    first, second = StagePaths.from_params(params["jpeg"]), StagePaths.from_params(params["raw"])
    generate_synthetic(first.raw, params["jpeg"].dataset.synthetic, params["jpeg"].base.seed)
    index_from_lists(first.raw, first.index)
    scan_videos(params["jpeg"])
    for stage in ("raw", "index", "scan"):  # the same inputs for the raw store
        getattr(second, stage).parent.mkdir(parents=True, exist_ok=True)
        getattr(second, stage).symlink_to(getattr(first, stage).resolve())
    return {fmt: decode_dataset(p) for fmt, p in params.items()}


@pytest.fixture
def jpeg_copy(stores: dict[str, Path], tmp_path: Path) -> Path:
    """A private copy of the JPEG store, free to damage."""
    return Path(shutil.copytree(stores["jpeg"], tmp_path / "frames"))


def test_raw_store_is_bit_exact_to_the_decode_stage_frames(stores: dict[str, Path]) -> None:
    """``decode.format: raw`` keeps today's store: .npy shards holding exactly what decoding produced."""
    raw = FrameStore(stores["raw"], "train")
    meta = json.loads((stores["raw"] / "store.json").read_text())
    assert raw.format == "raw" and meta["format"] == "raw" and meta["codec"] is None
    assert sorted(p.name for p in (stores["raw"] / "train").glob("shard-*")) == ["shard-00000.npy", "shard-00001.npy"]
    assert np.load(stores["raw"] / "train" / "shard-00000.npy").shape == (3, 8, 32, 32, 3)
    data_root = stores["raw"].parent.parent / "raw" / "synthetic"
    row = next(r for r in read_index(stores["raw"].parent.parent / "index" / "synthetic", "train") if r.path == raw.paths[1])
    expected = decode_video(DecodeJob(str(data_root / row.path), row), 8, 32, "decord").frames
    np.testing.assert_array_equal(raw[1][0], expected)


def test_jpeg_store_matches_the_raw_store_within_tolerance(stores: dict[str, Path]) -> None:
    for split in ("train", "val", "test"):
        jpeg, raw = FrameStore(stores["jpeg"], split), FrameStore(stores["raw"], split)
        assert (jpeg.format, raw.format) == ("jpeg", "raw")
        assert jpeg.paths == raw.paths and list(jpeg.labels) == list(raw.labels) and jpeg.classes == raw.classes
        for i in range(len(raw)):
            a, b = jpeg[i][0].astype(int), raw[i][0].astype(int)
            assert a.shape == b.shape == (8, 32, 32, 3) and jpeg[i][1] == raw[i][1]
            assert np.abs(a - b).mean() < JPEG_VS_RAW_MAE, (split, jpeg.paths[i])
            assert np.abs(a - b).max() <= JPEG_VS_RAW_MAX_ABS, (split, jpeg.paths[i])
    sizes = {fmt: json.loads((root / "store.json").read_text())["bytes"] for fmt, root in stores.items()}
    assert sizes["jpeg"] < sizes["raw"] / 2  # 32 px frames: JPEG's ~0.6 kB of tables per frame dominate


@pytest.mark.parametrize("fmt", ["jpeg", "raw"])
def test_frames_reads_only_the_asked_frames_in_their_order(stores: dict[str, Path], fmt: str) -> None:
    store = FrameStore(stores[fmt], "test")
    whole = store[2][0]
    np.testing.assert_array_equal(store.frames(2, [5, 0, 5]), whole[[5, 0, 5]])
    np.testing.assert_array_equal(store.frames(-1), store[len(store) - 1][0])
    with pytest.raises(IndexError):
        store.frames(len(store))


def test_clips_decode_only_the_frames_they_use(jpeg_copy: Path) -> None:
    """ClipDataset asks the store for its clip's frames only: a damaged frame it does not use is never read."""
    shard = jpeg_copy / "train" / "shard-00000.jpg.bin"
    index = np.load(jpeg_copy / "train" / "shard-00000.idx.npy")
    data = bytearray(shard.read_bytes())
    data[int(index[0, 0, 0]) + int(index[0, 0, 1]) // 2] ^= 0xFF  # video 0, frame 0
    shard.write_bytes(bytes(data))
    store = FrameStore(jpeg_copy, "train")
    centred = ClipDataset(store, 4, False, MEAN, STD, crop_size=32, seed=0)  # frames 1, 3, 5, 7 of 8
    assert centred[0][0].shape == (4, 3, 32, 32)
    with pytest.raises(StoreError, match="frame 0 of"):
        store[0]


def _one_line_store_error(store_root: Path, split: str = "train", video: int = 0) -> str:
    with pytest.raises(StoreError) as info:
        FrameStore(store_root, split)[video]
    message = str(info.value)
    assert "\n" not in message and "re-run the decode stage" in message
    return message


def test_a_flipped_byte_is_a_checksum_error_naming_the_shard(jpeg_copy: Path) -> None:
    shard = jpeg_copy / "train" / "shard-00001.jpg.bin"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0x01
    shard.write_bytes(bytes(data))
    message = _one_line_store_error(jpeg_copy, video=3)  # the one video of shard 1
    assert str(shard) in message and "checksum" in message


def test_a_truncated_or_missing_shard_is_a_store_error(jpeg_copy: Path) -> None:
    shard = jpeg_copy / "train" / "shard-00000.jpg.bin"
    shard.write_bytes(shard.read_bytes()[:-100])
    message = _one_line_store_error(jpeg_copy)
    assert str(shard) in message and "truncated" in message
    index = jpeg_copy / "train" / "shard-00001.idx.npy"
    index.write_bytes(b"not an npy file")
    assert str(index) in _one_line_store_error(jpeg_copy, video=3)
    (jpeg_copy / "test" / "shard-00000.jpg.bin").unlink()
    assert "shard-00000.jpg.bin" in _one_line_store_error(jpeg_copy, "test")


def test_undecodable_bytes_with_a_valid_checksum_are_a_store_error(jpeg_copy: Path) -> None:
    """The decoder is strict: a record that passes its checksum but is not a whole JPEG is refused.

    A JPEG cut short is only a *warning* to libjpeg-turbo, which would fill the rest of the frame
    with grey; the store must not hand that to training."""
    index_path = jpeg_copy / "val" / "shard-00000.idx.npy"
    index = np.load(index_path)
    data = (jpeg_copy / "val" / "shard-00000.jpg.bin").read_bytes()
    start, length = int(index[0, 2, 0]), int(index[0, 2, 1])
    scan = data.index(b"\xff\xda", start) - start  # the start-of-scan marker: headers before, pixels after
    length = scan + (length - scan) // 2  # frame 2 keeps its headers and half of its pixel data
    index[0, 2, 1:] = (length, zlib.crc32(data[start : start + length]))
    np.save(index_path, index)
    message = _one_line_store_error(jpeg_copy, "val")
    assert "shard-00000.jpg.bin" in message and "frame 2 of" in message and "cannot be decoded" in message
    assert "Premature end of JPEG file" in message


def test_a_damaged_raw_shard_is_a_store_error(stores: dict[str, Path], tmp_path: Path) -> None:
    raw = Path(shutil.copytree(stores["raw"], tmp_path / "raw"))
    shard = raw / "train" / "shard-00000.npy"
    shard.write_bytes(shard.read_bytes()[:200])
    assert str(shard) in _one_line_store_error(raw)


def test_an_unknown_format_names_store_json(jpeg_copy: Path) -> None:
    meta = json.loads((jpeg_copy / "store.json").read_text())
    (jpeg_copy / "store.json").write_text(json.dumps({**meta, "format": "webp"}))
    with pytest.raises(StoreError, match=r"store\.json: format 'webp' is not one this code reads"):
        FrameStore(jpeg_copy, "train")


@pytest.mark.parametrize("fmt", ["jpeg", "raw"])
def test_a_pickled_store_carries_and_opens_nothing(stores: dict[str, Path], tmp_path: Path, fmt: str) -> None:
    root = Path(shutil.copytree(stores[fmt], tmp_path / "frames"))
    store = FrameStore(root, "train")
    first = store[0][0]  # opens shard 0 in this process
    assert store._maps
    blob = pickle.dumps(store)
    assert len(blob) < 20_000  # no frames, no maps
    hidden = tmp_path / "hidden"
    shutil.move(root / "train", hidden)  # nothing to open: unpickling must not try
    clone = pickle.loads(blob)
    assert clone._maps == {} and len(clone) == len(store)
    with pytest.raises(StoreError):  # the first read opens the shard, in the receiving process
        clone[0]
    shutil.move(hidden, root / "train")
    np.testing.assert_array_equal(clone[0][0], first)


def test_the_same_frames_give_the_same_bytes(tmp_path: Path) -> None:
    """Same frames and quality -> identical shard bytes (DVC hashes them); the quality changes them."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 48, dtype=np.float64)
    frames = np.clip(ramp[None, :, None, None] + ramp[None, None, :, None] / 2
                     + rng.normal(0, 8, (4, 48, 48, 3)), 0, 255).astype(np.uint8)

    def write(name: str, quality: int) -> dict[str, bytes]:
        split_dir = tmp_path / name / "train"
        writer = ShardWriter(split_dir, shard_size=2, frames_per_video=4, size=48, codec=JpegCodec(quality))
        for k in range(3):
            writer.add(f"v{k}.mp4", k, "c", np.roll(frames, k, axis=2), 4)
        writer.close()
        return {p.name: p.read_bytes() for p in sorted(split_dir.iterdir())}

    a, b, other = write("a", 90), write("b", 90), write("c", 75)
    assert a == b and set(a) == {"manifest.csv", "shard-00000.jpg.bin", "shard-00000.idx.npy",
                                 "shard-00001.jpg.bin", "shard-00001.idx.npy"}
    assert a["shard-00000.jpg.bin"] != other["shard-00000.jpg.bin"]
    write_store_meta(tmp_path / "a", {"classes": ["c"], "frames_per_video": 4, "size": 48, "format": "jpeg",
                                      "codec": JpegCodec(90).describe()})
    decoded = FrameStore(tmp_path / "a", "train")[1][0].astype(int)
    errors = [np.abs(decoded - np.roll(frames, k, axis=2).astype(int)).mean() for k in range(3)]
    assert int(np.argmin(errors)) == 1 and errors[1] < 6.0  # its own frames, within JPEG's error on noise (sigma 8)


@pytest.mark.parametrize(("key", "value", "said"), [("format", "png", "decode.format"), ("quality", 0, "decode.quality"),
                                                    ("quality", 101, "decode.quality")])
def test_bad_format_settings_are_one_line_config_errors(key: str, value: object, said: str) -> None:
    with pytest.raises(ConfigError, match=said):
        params_from_dict({"decode": {key: value}}, "params.yaml")
