"""A GPU that torch cannot use is named as such, not reported as "no CUDA device".

The pinned torch is a CUDA 13 build; on a machine whose NVIDIA driver is older than CUDA 13 needs,
``torch.cuda.is_available()`` is False although ``nvidia-smi`` lists the GPU.  The user must read
that in one line, with the driver, torch's CUDA version and how to install a matching build: from
``make gpu-check`` and from the refusals of ``evaluate.device: cuda``, ``train.use_gpu`` and
``features.use_gpu``.  Here a fake ``nvidia-smi`` (a shell script on PATH) and a fake
``/proc/driver/nvidia/version`` stand in for the driver; CUDA is unavailable (monkeypatched, so
the tests mean the same on a GPU machine).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration  # the diagnosis runs (a fake) nvidia-smi; the check runs as a subprocess
NO_CUDA = "gpu-check: no CUDA device (torch.cuda.is_available() is False); run this on a machine with an NVIDIA GPU"
H100 = "NVIDIA H100 80GB HBM3, 535.104.05"
PROC_535 = ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n"
            "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n")


def _fake_smi(bin_dir: Path, body: str) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\n{body}\n")
    smi.chmod(0o755)
    return bin_dir


@pytest.fixture
def no_cuda(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """torch sees no CUDA, nothing hides the GPUs, no nvidia-smi on PATH and no driver in /proc (an
    empty PATH directory and a missing proc file); returns the directory a test puts nvidia-smi in."""
    import madapter.gpu_diagnosis as diagnosis

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(diagnosis, "PROC_VERSION", tmp_path / "proc-driver-nvidia-version")
    return bin_dir


def _assert_driver_line(line: str | None, gpu: str) -> None:
    assert line is not None and "\n" not in line
    assert gpu in line and "535.104.05" in line
    assert f"CUDA {torch.version.cuda}" in line
    base = torch.__version__.split("+")[0]
    assert f"pip install torch=={base}" in line and "--index-url https://download.pytorch.org/whl/cu12" in line


def test_nvidia_smi_gpu_on_an_old_driver_is_named_with_driver_cuda_and_install_hint(no_cuda: Path) -> None:
    from madapter.gpu_diagnosis import describe_unusable_gpu

    _fake_smi(no_cuda, f"echo '{H100}'")
    line = describe_unusable_gpu()
    _assert_driver_line(line, "NVIDIA H100 80GB HBM3")
    if torch.version.cuda and torch.version.cuda.startswith("13"):
        assert "580.65.06" in line  # what CUDA 13 needs, so the user knows which driver would do


def test_proc_driver_version_is_the_fallback_when_nvidia_smi_is_missing_or_hangs(no_cuda: Path,
                                                                                 tmp_path: Path) -> None:
    import madapter.gpu_diagnosis as diagnosis

    diagnosis.PROC_VERSION.write_text(PROC_535)
    _assert_driver_line(diagnosis.describe_unusable_gpu(), "NVIDIA GPU")
    _fake_smi(no_cuda, "sleep 30")  # a wedged driver: nvidia-smi never answers
    _assert_driver_line(diagnosis.describe_unusable_gpu(timeout_s=0.5), "NVIDIA GPU")


def test_nvidia_smi_finding_no_device_is_not_overruled_by_the_proc_file(no_cuda: Path) -> None:
    """A loaded driver without a GPU (a passed-through GPU gone, say): nothing torch could use."""
    import madapter.gpu_diagnosis as diagnosis

    diagnosis.PROC_VERSION.write_text(PROC_535)
    _fake_smi(no_cuda, "echo 'No devices were found'; exit 6")
    assert diagnosis.describe_unusable_gpu() is None


def test_without_nvidia_smi_and_proc_file_it_is_no_cuda_device_as_before(no_cuda: Path) -> None:
    from madapter.gpu_diagnosis import describe_unusable_gpu

    assert describe_unusable_gpu() is None
    gpu_check = _load_gpu_check()
    assert gpu_check.cuda_unavailable_line() == NO_CUDA


def test_gpus_hidden_by_cuda_visible_devices_are_not_blamed_on_the_driver(no_cuda: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """``CUDA_VISIBLE_DEVICES=""`` is the user hiding the GPUs on purpose: still "no CUDA device"."""
    from madapter.gpu_diagnosis import describe_unusable_gpu

    _fake_smi(no_cuda, f"echo '{H100}'")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert describe_unusable_gpu() is None


def test_a_recent_driver_is_not_called_too_old(no_cuda: Path) -> None:
    from madapter.gpu_diagnosis import describe_unusable_gpu

    _fake_smi(no_cuda, "echo 'NVIDIA H100 80GB HBM3, 580.82.07'")
    line = describe_unusable_gpu()
    assert line is not None and "580.82.07" in line and "NVIDIA H100 80GB HBM3" in line
    assert "needs NVIDIA driver" not in line and "cannot initialise" in line


def _load_gpu_check():
    import infra.gpu_check.cli  # its main, and the cuda_unavailable_line it calls

    return infra.gpu_check.cli


def test_gpu_check_main_exits_2_with_the_driver_line(no_cuda: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from madapter.gpu_diagnosis import describe_unusable_gpu

    _fake_smi(no_cuda, f"echo '{H100}'")
    gpu_check = _load_gpu_check()
    assert gpu_check.main([]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err.splitlines() == [f"gpu-check: {describe_unusable_gpu()}"]
    _assert_driver_line(out.err.rstrip("\n"), "NVIDIA H100 80GB HBM3")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine's torch can use CUDA: nothing to diagnose")
def test_gpu_check_script_exits_2_with_the_driver_line(tmp_path: Path) -> None:
    """The script as ``make gpu-check`` runs it, with the fake nvidia-smi first on PATH."""
    bin_dir = _fake_smi(tmp_path / "bin", f"echo '{H100}'")
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", "")])
    proc = subprocess.run([sys.executable, "-m", "infra.gpu_check"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-check: NVIDIA H100 80GB HBM3")
    _assert_driver_line(lines[0], "NVIDIA H100 80GB HBM3")


def test_evaluate_device_cuda_refusal_names_the_unusable_gpu(no_cuda: Path) -> None:
    from madapter.config import ConfigError
    from madapter.models.precision import resolve_device

    _fake_smi(no_cuda, f"echo '{H100}'")
    with pytest.raises(ConfigError) as err:
        resolve_device("cuda")
    line = str(err.value)
    assert line.startswith("evaluate.device: cuda asked for") and "set evaluate.device: auto or cpu" in line
    _assert_driver_line(line, "NVIDIA H100 80GB HBM3")


def test_train_use_gpu_refusal_names_the_unusable_gpu(no_cuda: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ray counts GPUs through NVML, which works on an old driver: the local Ray may well list the GPU
    that torch cannot use, so the refusal must come from torch's view too (and say why)."""
    import ray

    from madapter.config import params_from_dict
    from madapter.errors import StageError
    from madapter.train.driver import check_cluster_fits

    _fake_smi(no_cuda, f"echo '{H100}'")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    params = params_from_dict({"train": {"use_gpu": True, "num_workers": 1}})
    for ray_sees in ({"CPU": 2.0}, {"CPU": 2.0, "GPU": 1.0}):
        monkeypatch.setattr(ray, "cluster_resources", lambda have=ray_sees: have)
        with pytest.raises(StageError) as err:
            check_cluster_fits(params)
        line = str(err.value)
        assert "train.use_gpu: false" in line
        _assert_driver_line(line, "NVIDIA H100 80GB HBM3")
