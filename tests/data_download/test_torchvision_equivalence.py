"""The index selects exactly the videos torchvision's UCF101 / HMDB51 select, per fold and split.

Same files on disk (downloaded and extracted by our stage from the official-layout fixtures),
torchvision pointed at them, and the relative video paths compared for folds 1-3 x train/test.
torchvision needs each video's frame timestamps for its clip metadata.  torchvision 0.29 reads
them through TorchCodec, which this environment does not ship, so the timestamps are read here
with PyAV from the real tiny AVIs and handed over as ``_precomputed_metadata`` (for the files
torchvision's own ``find_classes`` / ``make_dataset`` list).  The split selection under test —
``_select_fold`` — is torchvision's, untouched.
"""

from __future__ import annotations

import os
from pathlib import Path

import av
import pytest
import torch
from torchvision.datasets import HMDB51, UCF101
from torchvision.datasets.folder import find_classes, make_dataset

from madapter.data.acquire.download import download_dataset
from madapter.data.index.schema import read_index
from madapter.data.index.stage import build_index
from tests.data_download import layouts
from tests.data_download.conftest import make_params


def _pyav_metadata(video_root: Path) -> dict:
    """What ``VideoClips`` would compute: per video, its frame pts and fps (decoded with PyAV)."""
    _, class_to_idx = find_classes(str(video_root))
    paths = [p for p, _ in make_dataset(str(video_root), class_to_idx, ("avi",))]
    pts, fps = [], []
    for path in paths:
        with av.open(path) as container:
            stream = container.streams.video[0]
            pts.append(torch.tensor([f.pts for f in container.decode(stream)], dtype=torch.long))
            fps.append(float(stream.average_rate))
    return {"video_paths": paths, "video_pts": pts, "video_fps": fps}


def _torchvision_selection(dataset) -> set[str]:
    return {os.path.relpath(dataset.samples[i][0], dataset.root) for i in dataset.indices}


def _index_selection(params, fold: int, split: str, video_root: str) -> tuple[set[str], dict[str, str]]:
    index = build_index(params.model_copy(update={"dataset": params.dataset.model_copy(update={"fold": fold})}))
    rows = read_index(index, split)
    rel = {os.path.relpath(r.path, video_root): r.label_name for r in rows}
    return set(rel), rel


@pytest.mark.parametrize("name", ["ucf101", "hmdb51"])
def test_index_matches_torchvision_per_fold_and_split(tmp_path, host_dir, server, name):
    torch.set_num_threads(1)
    build = layouts.ucf101 if name == "ucf101" else layouts.hmdb51
    build(host_dir / name, real_videos=True)
    params = make_params(tmp_path, name, f"{server.base_url}/{name}")
    raw = download_dataset(params)
    if name == "ucf101":
        video_root, ann, cls = "UCF-101", raw / "ucfTrainTestlist", UCF101
    else:
        video_root, ann, cls = "videos", raw / "testTrainMulti_7030_splits", HMDB51
    metadata = _pyav_metadata(raw / video_root)
    assert all(len(p) == 8 for p in metadata["video_pts"]), "fixture videos are real 8-frame AVIs"
    checked = 0
    for fold in (1, 2, 3):
        for train in (True, False):
            ds = cls(str(Path(raw) / video_root), str(ann), frames_per_clip=4, fold=fold, train=train,
                     num_workers=1, _precomputed_metadata=metadata)
            expected = _torchvision_selection(ds)
            got, label_names = _index_selection(params, fold, "train" if train else "test", video_root)
            assert got == expected, f"fold {fold} {'train' if train else 'test'}"
            # same class per video (torchvision: the folder; ours: classInd / split-file name)
            for i in ds.indices:
                path, label = ds.samples[i]
                assert label_names[os.path.relpath(path, ds.root)] == ds.classes[label]
            assert expected, "the fixture must select something"
            checked += 1
    assert checked == 6
