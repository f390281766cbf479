"""``batch-predict``'s inputs and its refusals, without Ray: every bad argument is one line naming the
option and the fix, exit code 2, before any cluster time is spent."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from madapter.batch.inputs import from_folder, from_list
from madapter.cli import app
from tests.batch_predict.conftest import Dataset


def test_folder_is_recursive_sorted_and_only_videos(tmp_path: Path) -> None:
    for name in ("b/clip.MP4", "a/deep/x.webm", "a/y.avi", "notes.txt", "a/cover.jpg", "z.mkv"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = from_folder(tmp_path)
    assert [Path(v.path).relative_to(tmp_path).as_posix() for v in found] == ["a/deep/x.webm", "a/y.avi",
                                                                             "b/clip.MP4", "z.mkv"]
    assert all(Path(v.source).is_absolute() for v in found)


def test_list_keeps_order_and_resolves_against_its_folder(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir()
    list_file = tmp_path / "lists" / "videos.txt"
    list_file.write_text("# header\nb.mp4\n\n  /abs/a.mp4  \nsub/c.avi\n")
    found = from_list(list_file)
    assert [v.path for v in found] == ["b.mp4", "/abs/a.mp4", "sub/c.avi"]
    assert [v.source for v in found] == [str(tmp_path / "lists/b.mp4"), "/abs/a.mp4", str(tmp_path / "lists/sub/c.avi")]


def _run(dataset: Dataset, *args: str):
    return CliRunner().invoke(app, ["batch-predict", *args, "--params", str(dataset.params_file)])


@pytest.mark.parametrize("case", ["missing_folder", "empty_list", "extension", "unwritable", "two_inputs",
                                  "unknown_alias", "not_a_checkpoint", "no_split"])
def test_bad_arguments_are_one_line_and_exit_2(case: str, dataset: Dataset, registered: str, checkpoint: Path,
                                               tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n# nothing\n")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = str(tmp_path / "out.parquet")
    ckpt = str(checkpoint)
    args, expected = {
        "missing_folder": (["--folder", str(tmp_path / "nope"), "-o", out, "-m", ckpt], "--folder"),
        "empty_list": (["--list", str(empty), "-o", out, "-m", ckpt], "--list"),
        "extension": (["--split", "test", "-o", str(tmp_path / "out.json"), "-m", ckpt], "--output"),
        "unwritable": (["--split", "test", "-o", str(blocker / "out.csv"), "-m", ckpt], "--output"),
        "two_inputs": (["--split", "test", "--list", str(empty), "-o", out, "-m", ckpt], "exactly one of"),
        "unknown_alias": (["--split", "test", "-o", out, "-m", registered.replace("@champion", "@nope")], "--model"),
        "not_a_checkpoint": (["--split", "test", "-o", out, "-m", str(blocker)], "--model"),
        "no_split": (["--split", "holdout", "-o", out, "-m", ckpt], "--split"),
    }[case]
    result = _run(dataset, *args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.stderr
    assert not Path(out).exists()
