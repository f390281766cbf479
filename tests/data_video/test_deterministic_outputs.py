"""What DVC hashes is a pure function of the inputs: scan and decode write the same bytes on every run.

Why it matters: DVC hashes ``data/scan/<ds>`` and ``data/frames/<ds>``, and training's fingerprint
hashes ``store.json``.  A timing, a worker count, a wall-clock stamp or an absolute path in them
made ``dvc repro --force decode`` on unchanged inputs change the hashes, re-run training and start
it from scratch.  Here the two stages run twice on the same data -- copied to a second location
with a longer path, run with other worker counts, seconds apart -- and every file must match.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from madapter.config import DecodeSection, Params, ScanSection
from madapter.data.acquire.synthetic import encode_video, generate_synthetic
from madapter.data.index.layouts import _DiskIndex, _video_roots
from madapter.data.index.schema import SPLITS, read_classes, read_index
from madapter.data.store import decode as decode_module
from madapter.data.store import scan as scan_module
from madapter.data.store.decode import decode_dataset
from madapter.data.store.scan import scan_videos
from madapter.paths import StagePaths

from .conftest import index_from_lists, make_params, write_index

REPO = Path(__file__).resolve().parents[2]


def _digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _add_awkward_videos(raw: Path, index: Path) -> None:
    """Videos whose scan/decode messages quote decoder errors (paths, decord's clock stamps)."""
    good = (raw / "grow/grow_000.mp4").read_bytes()
    bad = raw / "bad"
    bad.mkdir()
    (bad / "truncated.mp4").write_bytes(good[: len(good) // 2])  # unreadable: both decoders name the file
    (bad / "empty.mp4").touch()
    damaged, start, stop = bytearray(good), len(good) * 11 // 20, len(good) * 3 // 4
    damaged[start:stop] = bytes(stop - start)  # decord fails mid-stream, PyAV decodes the rest: a fallback note
    (bad / "damaged.mp4").write_bytes(bytes(damaged))
    encode_video(bad / "two frames.mp4", np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), np.uint8), fps=8)
    classes = read_classes(index)
    rows = {split: [(r.path, r.label) for r in read_index(index, split)] for split in SPLITS}
    rows["train"] += [(f"bad/{name}", 0) for name in ("truncated.mp4", "empty.mp4", "damaged.mp4", "two frames.mp4")]
    write_index(index, rows, classes)


def _run_scan_then_decode(params: Params) -> dict[str, dict[str, str]]:
    """Scan; break one video AFTER the scan (so decode reports a failure); decode; digest both outputs."""
    paths = StagePaths.from_params(params)
    scan_videos(params)
    (paths.raw / "shrink/shrink_000.mp4").write_bytes(b"\x00" * 4096)
    decode_dataset(params)
    return {"scan": _digests(paths.scan), "frames": _digests(paths.frames)}


def test_scan_and_decode_write_the_same_bytes_anywhere_any_workers(tmp_path: Path) -> None:
    first = make_params(tmp_path / "a", scan={"workers": 1}, decode={"workers": 1})
    paths = StagePaths.from_params(first)
    generate_synthetic(paths.raw, first.dataset.synthetic, first.base.seed)
    index_from_lists(paths.raw, paths.index)
    _add_awkward_videos(paths.raw, paths.index)
    elsewhere = tmp_path / "a second clone with a much longer path"
    shutil.copytree(tmp_path / "a", elsewhere)  # before any stage ran: the same inputs

    one = _run_scan_then_decode(first)
    two = _run_scan_then_decode(make_params(elsewhere, scan={"workers": 2}, decode={"workers": 2}))

    assert set(one["scan"]) == {"quarantine.csv", "report.json"} and "store.json" in one["frames"]
    assert one == two
    report = json.loads((paths.scan / "report.json").read_text())
    assert report["quarantined"] == 3 and report["pyav_fallbacks"][0]["path"] == "bad/damaged.mp4"
    meta = json.loads((paths.frames / "store.json").read_text())
    assert [f["path"] for f in meta["failed"]] == ["shrink/shrink_000.mp4"]
    text = (paths.scan / "report.json").read_text() + (paths.scan / "quarantine.csv").read_text()
    text += (paths.frames / "store.json").read_text()
    assert str(tmp_path) not in text  # names are dataset-relative, whatever the checkout's location
    for stage, workers in (("scan", 1), ("decode", 1)):  # the timings went to their own metrics file
        timing = json.loads((paths.timings / f"{stage}.json").read_text())
        assert timing["workers"] == workers and timing["seconds"] > 0 and timing["videos_per_s"] > 0


@pytest.mark.parametrize("listing", ["sorted", "reversed"])
def test_index_lookups_do_not_depend_on_the_directory_listing_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, listing: str,
) -> None:
    """Two copies of a clip (a re-extracted archive, a second root): the index picks the same one on
    every file system, whatever order the directory listing comes in (ext4, XFS, NFS differ)."""
    for rel in ("copy_a/Jump/v1.mp4", "copy_b/Jump/v1.mp4"):
        (tmp_path / rel).parent.mkdir(parents=True)
        (tmp_path / rel).write_bytes(b"not decoded here")
    real_rglob = Path.rglob
    monkeypatch.setattr(Path, "rglob", lambda self, pattern: iter(
        sorted(real_rglob(self, pattern), reverse=listing == "reversed")))
    disk = _DiskIndex(tmp_path)
    assert disk.by_stem["v1"] == "copy_a/Jump/v1.mp4"  # Kinetics and SSv2 find videos by stem
    assert _video_roots(disk, ["Jump"]) == ["copy_a", "copy_b"]  # UCF101 / HMDB51 try roots in this order


def _stage(name: str) -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][name]


def test_dvc_params_are_every_key_that_shapes_the_output_and_no_run_control() -> None:
    """A worker count must not re-run a stage; every other key of the section must."""
    for name, section, run_control in (("scan", ScanSection, scan_module.RUN_CONTROL_KEYS),
                                       ("decode", DecodeSection, decode_module.RUN_CONTROL_KEYS)):
        declared = set(_stage(name)["params"])
        shaping = {f"{name}.{key}" for key in section.model_fields if key not in run_control}
        assert shaping <= declared, f"dvc.yaml {name}.params: add {sorted(shaping - declared)}"
        assert name not in declared and not {f"{name}.{k}" for k in run_control} & declared, \
            f"dvc.yaml {name}.params: list the keys one by one, without {sorted(run_control)}"
        metrics = [m for m in _stage(name)["metrics"] if isinstance(m, dict)]
        assert [{f"${{base.outputs_dir}}/timings/{name}.json": {"cache": False}}] == metrics


DATA_STAGES = ("download", "index", "scan", "decode")


def _lock_outs(repo: Path) -> dict[str, dict[str, str]]:
    """``{stage: {out path: md5}}`` of the data stages as ``dvc.lock`` records them, without the timing
    metrics (they differ)."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    return {name: {o["path"]: o["md5"] for o in lock[name].get("outs", []) if "timings/" not in o["path"]}
            for name in DATA_STAGES if name in lock}


@pytest.mark.integration
def test_forced_dvc_repro_keeps_every_hash_and_worker_counts_rerun_nothing(finished_pipeline, tmp_path: Path) -> None:
    """The issue as a user meets it: ``dvc repro --force decode`` on unchanged inputs must not
    change what train depends on, and a new worker count must not re-run anything."""
    from tests.common.processes import run
    from tests.common.repo import copy_finished, write_params

    dvc = [sys.executable, "-m", "dvc"]
    repo = copy_finished(finished_pipeline[0], tmp_path / "repo")
    before = _lock_outs(repo)
    assert set(before) == set(DATA_STAGES)
    assert json.loads((repo / "outputs/timings/decode.json").read_text())["videos"] == 6

    write_params(repo, {"scan": {"workers": 2}, "decode": {"workers": 2}})
    status = run([*dvc, "status", "decode"], repo)
    assert "up to date" in status.stdout, status.stdout

    forced = run([*dvc, "repro", "--force", "decode"], repo)
    assert "Running stage 'decode'" in forced.stdout and "Running stage 'download'" in forced.stdout
    assert _lock_outs(repo) == before  # the synthetic videos, index, scan and frame store: same bytes
    assert json.loads((repo / "outputs/timings/decode.json").read_text())["workers"] == 2
