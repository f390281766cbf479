"""Failures the user did not cause end in ONE line, through the real CLI (``python -m madapter``).

A host that refuses the connection, a connection dropped half-way, a full disk, a missing RAR
tool: each must end with exactly one ``error:`` line naming the URL or file, what happened and
what to do, a non-zero exit code, no traceback (unless ``--log-level DEBUG``), and whatever was
already downloaded kept for the next run.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from madapter.cli import _failure_line
from madapter.config import params_from_dict
from madapter.errors import StageError, expected_failure_line
from tests.data_download import layouts
from tests.data_download.rarwriter import write_rar

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _params_file(tmp_path: Path, source: str | Path, **download: object) -> Path:
    """A params.yaml for the UCF101 download with fast retries, data under ``tmp_path``."""
    data = {
        "base": {"data_dir": str(tmp_path / "data"), "outputs_dir": str(tmp_path / "outputs")},
        "dataset": {"name": "ucf101", "source": str(source)},
        "download": {"retries": 2, "backoff_s": 0.01, "timeout_s": 10.0, **download},
    }
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _download(params: Path, *, debug: bool = False, path_env: str | None = None) -> subprocess.CompletedProcess:
    """``python -m madapter [--log-level DEBUG] download --params P`` as a user runs it."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    if path_env is not None:
        env["PATH"] = path_env
    level = ["--log-level", "DEBUG"] if debug else []
    return subprocess.run(
        [sys.executable, "-m", "madapter", *level, "download", "--params", str(params)],
        cwd=params.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def _closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (bound, then released): connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_host_is_one_line_naming_the_url_and_dataset_source(tmp_path):
    base = f"http://127.0.0.1:{_closed_port()}/ucf"
    proc = _download(_params_file(tmp_path, base))
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    [line] = _error_lines(proc)
    assert f"{base}/UCF101.rar" in line and "connection refused" in line and "dataset.source" in line, line
    retries = [ln for ln in proc.stderr.splitlines() if "WARNING" in ln and "retry" in ln]
    assert len(retries) == 2 and all(len(ln) < 200 and "connection refused" in ln for ln in retries), retries


def test_debug_log_level_shows_the_traceback(tmp_path):
    proc = _download(_params_file(tmp_path, f"http://127.0.0.1:{_closed_port()}/ucf", retries=0), debug=True)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr and "ConnectionRefusedError" in proc.stderr
    assert len(_error_lines(proc)) == 1


def test_dropped_connection_keeps_the_part_file_and_the_rerun_resumes(tmp_path, host_dir, server):
    layout = layouts.ucf101(host_dir / "ucf", real_videos=False)
    size = (layout.host / "UCF101.rar").stat().st_size
    server.drop_after["ucf/UCF101.rar"] = size // 2
    params = _params_file(tmp_path, f"{server.base_url}/ucf", retries=0)
    proc = _download(params)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    part = tmp_path / "data/raw/ucf101/.downloads/UCF101.rar.part"
    [line] = _error_lines(proc)
    assert f"{server.base_url}/ucf/UCF101.rar" in line and f"re-run to resume from {part}" in line, line
    assert part.stat().st_size == size // 2

    rerun = _download(params)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    resumed = server.requests_for("ucf/UCF101.rar")[-1]
    assert resumed.range == f"bytes={size // 2}-" and resumed.status == 206


def test_missing_rar_tool_names_it_and_the_setup_script(tmp_path):
    source = tmp_path / "copy"
    source.mkdir()
    write_rar(source / "UCF101.rar", {"UCF-101/YoYo/v_YoYo_g01_c01.avi": b"x" * 1000}, method=3)
    empty_bin = tmp_path / "bin"  # a PATH without unar, bsdtar, unrar or 7z
    empty_bin.mkdir()
    proc = _download(_params_file(tmp_path, source), path_env=str(empty_bin))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    [line] = _error_lines(proc)
    assert "UCF101.rar" in line and "unar" in line and "scripts/setup-system.sh" in line, line
    assert (tmp_path / "data/raw/ucf101/.downloads/UCF101.rar").is_file(), "the download is kept for the re-run"


def test_full_disk_is_one_line_naming_the_file(tmp_path, host_dir, server):
    layouts.ucf101(host_dir / "ucf", real_videos=False)
    part = tmp_path / "data/raw/ucf101/.downloads/UCF101.rar.part"
    part.parent.mkdir(parents=True)
    part.symlink_to("/dev/full")  # every write to it fails with ENOSPC, as on a full disk
    proc = _download(_params_file(tmp_path, f"{server.base_url}/ucf"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    [line] = _error_lines(proc)
    assert str(part) in line and "no space left on device" in line and "base.data_dir" in line, line


def test_os_errors_without_a_file_name_and_missing_programs_are_one_line(tmp_path):
    params = params_from_dict({"base": {"data_dir": str(tmp_path / "d"), "outputs_dir": str(tmp_path / "o")}})
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what a failed write() raises: no file name
    line = _failure_line("decode", params, full)
    assert line is not None and str(tmp_path / "d") in line and "no space left on device" in line
    with pytest.raises(FileNotFoundError) as info:
        subprocess.run(["madapter-no-such-tool"], check=False)
    assert expected_failure_line(info.value) == (
        "madapter-no-such-tool: not installed (not found on PATH); "
        "install it: scripts/setup-system.sh installs the system tools the pipeline uses"
    )
    assert expected_failure_line(FileNotFoundError(errno.ENOENT, "No such file", "data.csv")) is None, "a bug keeps its traceback"
    assert expected_failure_line(StageError("x: y; do z")) == "x: y; do z"
    assert expected_failure_line(KeyError("bug")) is None


def test_older_stage_errors_count_as_expected_failures():
    """Stage errors that predate StageError (defined in modules errors.py must not import) map too."""
    from madapter.data.video import VideoError
    from madapter.models.backbone import WeightsError
    from madapter.models.checkpoint import CheckpointError

    for err in (
        CheckpointError("outputs/train/checkpoint.pt: checkpoint not found"),
        WeightsError("model.weights_file: w.pth does not exist"),
        VideoError("a.mp4: empty file (0 bytes); re-download it"),
    ):
        assert expected_failure_line(err) == str(err)
