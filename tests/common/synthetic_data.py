"""The small synthetic datasets the integration tiers run on, built by the REAL data stages.

Why one place: the features, train and sweep tiers each need a tiny but honest dataset (real mp4
files from the built-in generator, the real index, a decord scan and decode into the real frame
store), and they used to build it with near-identical copies of the same code.  Each tier still
owns its fixtures and their scopes (and its own Ray: a Ray that served Ray Data could not place
Ray Train workers later, so tiers do not share one); only the params sections and the stage chain
live here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from madapter.config import Params, params_from_dict
from madapter.paths import StagePaths


def synthetic_sections(
    classes: int, videos_per_class: int, num_frames: int, size: int,
    frames_per_video: int, decode_size: int, shard_size: int,
) -> dict[str, dict[str, Any]]:
    """The ``dataset``/``scan``/``decode`` sections of a tiny synthetic set (one scan/decode worker:
    the test machine is shared).

    ``classes`` must be even (whole reversal pairs, see :mod:`madapter.data.acquire.synthetic`);
    ``num_frames``/``size`` are the generated videos', ``frames_per_video``/``decode_size`` the
    frame store's.
    """
    if classes % 2:
        raise ValueError(f"classes={classes}: the synthetic set comes in reversal pairs, use an even number")
    return {
        "dataset": {"name": "synthetic", "synthetic": {"classes": classes, "videos_per_class": videos_per_class,
                                                       "num_frames": num_frames, "size": size}},
        "scan": {"workers": 1, "timeout_s": 30},
        "decode": {"workers": 1, "frames_per_video": frames_per_video, "size": decode_size,
                   "shard_size": shard_size},
    }


def params_with(data: dict[str, dict[str, Any]], sections: dict[str, dict[str, Any]], source: str) -> Params:
    """``data``'s sections updated key by key from ``sections`` (keys a section does not name keep
    ``data``'s value), validated as ``source`` names them in errors."""
    merged = {key: dict(value) for key, value in data.items()}
    for key, value in sections.items():
        merged.setdefault(key, {}).update(value)
    return params_from_dict(merged, source)


def build_synthetic_data(params: Params) -> Path:
    """download -> index -> scan -> decode with the real stage functions; returns ``base.data_dir``.

    Fails (rather than letting a later fixture fail obscurely) if the frame store's train split
    was not written.
    """
    from madapter.data.acquire.download import download_dataset
    from madapter.data.index.stage import build_index
    from madapter.data.store.decode import decode_dataset
    from madapter.data.store.scan import scan_videos

    for stage in (download_dataset, build_index, scan_videos, decode_dataset):
        stage(params)
    manifest = StagePaths.from_params(params).frames / "train" / "manifest.csv"
    if not manifest.is_file():
        raise RuntimeError(f"{manifest}: the decode stage wrote no train split")
    return Path(params.base.data_dir)
