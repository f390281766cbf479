"""Download -> extract -> index for every official layout, served by a local HTTP mirror."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from madapter.data.acquire.download import download_dataset
from madapter.data.acquire.fetch import ChecksumError, DownloadError
from madapter.data.index.schema import INDEX_FIELDS, read_index
from madapter.data.index.stage import build_index
from madapter.paths import StagePaths
from tests.data_download import layouts
from tests.data_download.conftest import make_params


def _index_paths(index_dir: Path) -> dict[str, set[str]]:
    return {s: {r.path for r in read_index(index_dir, s)} for s in ("train", "val", "test")}


def _check_index(index_dir: Path, raw: Path, layout: layouts.Layout) -> dict:
    assert _index_paths(index_dir) == layout.expected
    assert (index_dir / "classes.txt").read_text().splitlines() == layout.classes
    for split in ("train", "val", "test"):
        assert (index_dir / f"{split}.csv").read_text().splitlines()[0] == ",".join(INDEX_FIELDS)
        for row in read_index(index_dir, split):
            assert (raw / row.path).is_file(), row.path
            assert layout.classes[row.label] == row.label_name
            assert row.split == split
    report = json.loads((index_dir / "index_report.json").read_text())
    assert report["missing_count"] == len(layout.missing)
    return report


def test_ucf101_rar_and_split_zip(tmp_path, host_dir, server):
    layout = layouts.ucf101(host_dir / "ucf", real_videos=False)
    params = make_params(tmp_path, "ucf101", f"{server.base_url}/ucf/")
    raw = download_dataset(params)
    assert (raw / "UCF-101" / "HandstandPushups" / "v_HandStandPushups_g03_c01.avi").is_file()
    assert not (raw / ".downloads" / "UCF101.rar").exists(), "archives are deleted after extraction by default"
    report = _check_index(build_index(params), raw, layout)
    assert report["missing"] == ["YoYo/v_YoYo_g06_c01.avi"]
    labels = {r.path: r.label_name for r in read_index(StagePaths.from_params(params).index, "test")}
    # test lists carry no label: it comes from the folder, also for the HandStand/Handstand quirk
    assert labels["UCF-101/HandstandPushups/v_HandStandPushups_g01_c01.avi"] == "HandstandPushups"


def test_hmdb51_nested_rar_and_split_rar(tmp_path, host_dir, server):
    layout = layouts.hmdb51(host_dir / "hmdb", real_videos=False)
    params = make_params(tmp_path, "hmdb51", f"{server.base_url}/hmdb")
    raw = download_dataset(params)
    assert not list((raw / "videos").glob("*.rar")), "inner per-class rars are removed after extraction"
    assert (raw / "videos" / "cartwheel" / "(Rad)Schlag_die_Bank!_cartwheel_f_cm_np1_le_med_0.avi").is_file()
    _check_index(build_index(params), raw, layout)


@pytest.mark.parametrize("name,folder,tag", [("kinetics400", "400", "k400"), ("kinetics700", "700_2020", "k700_2020")])
def test_kinetics_csvs_and_tar_gz_parts(tmp_path, host_dir, server, name, folder, tag):
    layout = layouts.kinetics(host_dir / "kin", folder, tag)
    params = make_params(tmp_path, name, f"{server.base_url}/kin")
    raw = download_dataset(params)
    report = _check_index(build_index(params), raw, layout)
    assert report["missing"] == ["train/-missingvid_000005_000015.mp4"]
    rows = read_index(StagePaths.from_params(params).index, "train")
    by_path = {r.path: r for r in rows}
    first = by_path["train/-0aBcDeFgHi_000010_000020.mp4"]
    # CVDF's clip is already trimmed to [10, 20) s: the file is the segment, no offsets into it
    assert (first.label_name, first.start, first.end) == ("abseiling", None, None)
    assert by_path["train/x1y2z3w4v5u_000000_000010.mp4"].label_name == "passing American football (in game)"
    # the part list holds official s3 URLs; the mirror was asked for the same relative paths
    assert server.requests_for("kin/train/part_1.tar.gz")


def test_ssv2_json_and_archive_parts_from_mirror(tmp_path, host_dir, server):
    layout = layouts.ssv2(host_dir / "ssv2")
    params = make_params(tmp_path, "ssv2", f"{server.base_url}/ssv2")
    raw = download_dataset(params)
    report = _check_index(build_index(params), raw, layout)
    assert report["test_from"] == "val"
    labels = {r.path: r.label for r in read_index(StagePaths.from_params(params).index, "train")}
    assert labels["20bn-something-something-v2/42326.webm"] == 0  # template brackets stripped -> "0"
    assert labels["20bn-something-something-v2/78687.webm"] == 1
    assert server.requests_for("ssv2/20bn-something-something-v2-02")[0].status == 404  # parts end at 404


def test_ssv2_from_local_zipped_parts(tmp_path):
    layout = layouts.ssv2(tmp_path / "my_downloads", zipped=True)
    params = make_params(tmp_path, "ssv2", layout.host)
    raw = download_dataset(params)
    _check_index(build_index(params), raw, layout)


def test_ssv2_without_source_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="dataset.source: required for ssv2"):
        download_dataset(make_params(tmp_path, "ssv2"))


def test_interrupted_download_resumes_where_it_stopped(tmp_path, host_dir, server):
    layout = layouts.ucf101(host_dir / "ucf", real_videos=False)
    size = (layout.host / "UCF101.rar").stat().st_size
    server.drop_after["ucf/UCF101.rar"] = size // 2
    params = make_params(tmp_path, "ucf101", f"{server.base_url}/ucf", download={"retries": 0})
    with pytest.raises(DownloadError, match="re-run to resume"):
        download_dataset(params)
    part = StagePaths.from_params(params).raw / ".downloads" / "UCF101.rar.part"
    assert part.stat().st_size == size // 2
    assert not part.with_suffix("").exists()

    raw = download_dataset(params)  # the re-run resumes
    resumed = server.requests_for("ucf/UCF101.rar")[-1]
    assert resumed.range == f"bytes={size // 2}-" and resumed.status == 206 and resumed.sent == size - size // 2
    _check_index(build_index(params), raw, layout)


def test_rerun_skips_present_and_verified_files(tmp_path, host_dir, server):
    layouts.hmdb51(host_dir / "hmdb", real_videos=False)
    params = make_params(tmp_path, "hmdb51", f"{server.base_url}/hmdb", download={"keep_archives": True})
    download_dataset(params)
    served = len(server.log)
    raw = download_dataset(params)
    assert len(server.log) == served, "nothing is fetched again"
    state = json.loads((raw / ".downloads" / "state.json").read_text())
    assert state["hmdb51_org.rar"]["extracted"] is True and len(state["hmdb51_org.rar"]["sha256"]) == 64

    # a kept archive that got corrupted on disk is detected and fetched again
    (raw / ".downloads" / "test_train_splits.rar").write_bytes(b"garbage")
    download_dataset(params)
    assert [r.path for r in server.log[served:]] == ["hmdb/test_train_splits.rar"]


def test_checksum_mismatch_is_rejected(tmp_path, host_dir, server):
    layouts.hmdb51(host_dir / "hmdb", real_videos=False)
    params = make_params(
        tmp_path, "hmdb51", f"{server.base_url}/hmdb", download={"checksums": {"test_train_splits.rar": "0" * 64}}
    )
    with pytest.raises(ChecksumError, match="test_train_splits.rar: sha256 .* does not match"):
        download_dataset(params)
    downloads = StagePaths.from_params(params).raw / ".downloads"
    assert not (downloads / "test_train_splits.rar").exists()
    assert not (downloads / "test_train_splits.rar.part").exists()
    # what was done before the bad file stays done
    assert json.loads((downloads / "state.json").read_text())["hmdb51_org.rar"]["extracted"] is True


def test_local_directory_source(tmp_path):
    layout = layouts.kinetics(tmp_path / "cvdf_copy")
    params = make_params(tmp_path, "kinetics400", layout.host)
    raw = download_dataset(params)
    _check_index(build_index(params), raw, layout)


def test_list_layout_from_list_root(tmp_path):
    root = tmp_path / "my list"
    (root / "clips" / "a b").mkdir(parents=True)
    for name in ("x (1).mp4", "-y!.mp4", "ünï.mp4"):
        (root / "clips" / "a b" / name).write_bytes(b"v")
    (root / "train.txt").write_text("clips/a b/x (1).mp4 0\r\nclips/a b/-y!.mp4 1\r\nclips/gone.mp4 1\r\n")
    (root / "test.txt").write_text("clips/a b/ünï.mp4 1\n")
    (root / "classes.txt").write_text("wave\nclap\n")
    params = make_params(tmp_path, "list", dataset={"list_root": str(root)})
    raw = download_dataset(params)
    index = build_index(params)
    rows = read_index(index, "train")
    assert [(r.path, r.label, r.label_name) for r in rows] == [
        ("clips/a b/x (1).mp4", 0, "wave"),
        ("clips/a b/-y!.mp4", 1, "clap"),
    ]
    assert (raw / "clips" / "a b" / "ünï.mp4").is_file()
    assert read_index(index, "val") == []
    assert json.loads((index / "index_report.json").read_text())["missing"] == ["clips/gone.mp4"]


def test_list_layout_bad_line_names_file_and_line(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    (root / "train.txt").write_text("a.mp4 0\nb.mp4 notalabel\n")
    params = make_params(tmp_path, "list", dataset={"list_root": str(root)})
    download_dataset(params)
    with pytest.raises(ValueError, match=r"train.txt:2: expected 'relative/path <non-negative int label>'"):
        build_index(params)
