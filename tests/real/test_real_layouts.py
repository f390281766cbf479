"""Real clips under their real names in each official layout: index -> scan -> decode.

The trees are laid out as the datasets ship (HMDB51's per-class split files with tags 1/2/0,
UCF101's ``classInd.txt``/``trainlist01.txt``/``testlist01.txt`` with CRLF lines, Kinetics-400's
annotation CSVs next to CVDF's trimmed ``<id>_<start:06d>_<end:06d>.mp4`` clips), with the real files.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest

from madapter.config import Params, params_from_dict
from madapter.data.index.schema import read_index
from madapter.data.index.stage import build_index
from madapter.data.sampling import uniform_grid
from madapter.data.store.decode import decode_dataset
from madapter.data.store.frame_store import FrameStore
from madapter.data.store.scan import scan_videos
from madapter.data.transforms import resize_and_center_crop
from madapter.data.video import PyAVVideo, read_frames
from madapter.paths import StagePaths

FRAMES, SIZE = 8, 64
KINETICS = {  # the real CVDF clips, with the annotation times of a full-length video (14 s to 24 s, etc.)
    "R6llTwEh07w": ("train", "label a", 14, 24),
    "SOX5yA1l24A": ("train", "label b", 3, 13),
    "WUzgd7C1pWA": ("val", "label a", 95, 105),
}


def _params(data_dir: Path, name: str) -> Params:
    return params_from_dict({
        "base": {"data_dir": str(data_dir), "outputs_dir": str(data_dir.parent / "outputs")},
        "dataset": {"name": name},
        "scan": {"workers": 1},
        "decode": {"workers": 1, "frames_per_video": FRAMES, "size": SIZE, "format": "raw"},  # exact: no JPEG error
        "model": {"num_frames": 4},
    }, "tests/real")


def _run_data_stages(params: Params) -> StagePaths:
    for stage in (build_index, scan_videos, decode_dataset):
        stage(params)
    return StagePaths.from_params(params)


def _assert_store_is_the_whole_clip_grid(paths: StagePaths, split: str, clips_dir: Path) -> int:
    """Every stored video holds the decode grid over its WHOLE clip, frame for frame (a raw store: exact).

    The reference is the whole clip decoded in order with PyAV, not the pipeline's own reader: a
    reader that seeks to the wrong frames (decord on DivX) would agree with itself.
    """
    store = FrameStore(paths.frames, split)
    for i, rel in enumerate(store.paths):
        every = PyAVVideo(paths.raw / rel).decode_all()
        # The grid over the frame count the pipeline used: DivX counts a packet more than decodes.
        grid = np.minimum(uniform_grid(int(store.num_source_frames[i]), FRAMES), len(every) - 1)
        want = resize_and_center_crop(every[grid], SIZE).astype(np.int16)
        got = store.frames(i).astype(np.int16)
        error = np.abs(got - want).mean(axis=(1, 2, 3))
        assert error.max() < 0.5, f"{rel}: stored frames are not the whole-clip grid (mean error per frame {error.round(1)})"
        assert abs(int(store.num_source_frames[i]) - len(every)) <= 2
    return len(store)


def test_hmdb51_tree_of_real_clips(real_material, tmp_path: Path) -> None:
    raw = tmp_path / "data" / "raw" / "hmdb51"
    videos = {  # class -> real HMDB51 files (the cartwheel file's real name, without torchvision's prefix)
        "wave": ["RATRACE_wave_f_nm_np1_fr_goo_37.avi", "SchoolRulesHowTheyHelpUs_wave_f_nm_np1_ba_med_0.avi",
                 "TrumanShow_wave_f_nm_np1_fr_med_26.avi"],
        "cartwheel": ["Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi"],
    }
    tags = {"RATRACE_wave_f_nm_np1_fr_goo_37.avi": 1, "SchoolRulesHowTheyHelpUs_wave_f_nm_np1_ba_med_0.avi": 0,
            "TrumanShow_wave_f_nm_np1_fr_med_26.avi": 2, "Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi": 1}
    splits = raw / "testTrainMulti_7030_splits"
    splits.mkdir(parents=True)
    for cls, names in videos.items():
        (raw / cls).mkdir()
        for name in names:
            source = "hmdb51_" + name if name.startswith("Turnk") else name
            shutil.copy(real_material.clip(source), raw / cls / name)
        # HMDB51's split files: "<name> <tag> " per line, a trailing blank, tag 1 train / 2 test / 0 unused
        (splits / f"{cls}_test_split1.txt").write_text("".join(f"{n} {tags[n]} \n" for n in names))
    paths = _run_data_stages(_params(tmp_path / "data", "hmdb51"))
    train = {Path(r.path).name: r.label_name for r in read_index(paths.index, "train")}
    test = {Path(r.path).name: r.label_name for r in read_index(paths.index, "test")}
    assert train == {"RATRACE_wave_f_nm_np1_fr_goo_37.avi": "wave",
                     "Turnk_r_Pippi_Michel_cartwheel_f_cm_np2_le_med_6.avi": "cartwheel"}
    assert test == {"TrumanShow_wave_f_nm_np1_fr_med_26.avi": "wave"}
    assert _assert_store_is_the_whole_clip_grid(paths, "train", raw) == 2
    assert _assert_store_is_the_whole_clip_grid(paths, "test", raw) == 1


def test_ucf101_tree_of_real_clips(real_material, tmp_path: Path) -> None:
    raw = tmp_path / "data" / "raw" / "ucf101"
    folder = raw / "UCF-101" / "SoccerJuggling"
    folder.mkdir(parents=True)
    for name in ("v_SoccerJuggling_g23_c01.avi", "v_SoccerJuggling_g24_c01.avi"):
        shutil.copy(real_material.clip(name), folder / name)
    lists = raw / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "classInd.txt").write_bytes(b"1 SoccerJuggling\r\n")
    (lists / "trainlist01.txt").write_bytes(b"SoccerJuggling/v_SoccerJuggling_g24_c01.avi 1\r\n")
    (lists / "testlist01.txt").write_bytes(b"SoccerJuggling/v_SoccerJuggling_g23_c01.avi\r\n")
    paths = _run_data_stages(_params(tmp_path / "data", "ucf101"))
    assert [r.path for r in read_index(paths.index, "test")] == ["UCF-101/SoccerJuggling/v_SoccerJuggling_g23_c01.avi"]
    assert _assert_store_is_the_whole_clip_grid(paths, "train", raw) == 1
    assert _assert_store_is_the_whole_clip_grid(paths, "test", raw) == 1


def test_kinetics400_trimmed_clips_are_stored_whole(real_material, tmp_path: Path) -> None:
    """CVDF's clips ARE the annotated 10-s segments: the CSV's times must not be applied to them again.

    Before the fix, ``R6llTwEh07w_000014_000024.mp4`` (303 frames) got the bounds (299, 300) -- every
    stored frame was frame 299 -- and ``SOX5yA1l24A_000003_000013.mp4`` lost its first 3 s.
    """
    raw = tmp_path / "data" / "raw" / "kinetics400"
    (raw / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        (raw / split).mkdir()
        with open(raw / "annotations" / f"{split}.csv", "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["label", "youtube_id", "time_start", "time_end", "split", "is_cc"])
            for vid, (where, label, start, end) in KINETICS.items():
                if where == split:
                    writer.writerow([label, vid, start, end, split, 0])
                    shutil.copy(real_material.clip(f"{vid}.mp4"), raw / split / f"{vid}_{start:06d}_{end:06d}.mp4")
    paths = _run_data_stages(_params(tmp_path / "data", "kinetics400"))
    rows = read_index(paths.index, "train")
    assert {Path(r.path).name for r in rows} == {"R6llTwEh07w_000014_000024.mp4", "SOX5yA1l24A_000003_000013.mp4"}
    assert all(r.start is None and r.end is None for r in rows), "a trimmed clip is its own segment"
    assert _assert_store_is_the_whole_clip_grid(paths, "train", raw) == 2
    assert _assert_store_is_the_whole_clip_grid(paths, "val", raw) == 1
    store = FrameStore(paths.frames, "train")
    for i in range(len(store)):
        frames = store.frames(i).astype(np.int16)
        assert np.abs(np.diff(frames, axis=0)).mean() > 1.0, f"{store.paths[i]}: one repeated frame"


@pytest.mark.parametrize("start,end", [(14, 24), (3, 13)])
def test_evaluation_views_span_the_trimmed_clip(real_material, start: int, end: int) -> None:
    """The protocol's views (evaluate, predict, serving) of a trimmed clip spread over all of it."""
    from madapter.data.sampling import protocol_indices

    path = real_material.clip("R6llTwEh07w.mp4")
    result = read_frames(path, lambda n, fps: uniform_grid(n, 2))
    views = protocol_indices(result.num_frames, 30.0, clip_len=8, clips=2, start=float(start), end=float(end))
    assert views.min() < result.num_frames * 0.1 and views.max() > result.num_frames * 0.9
