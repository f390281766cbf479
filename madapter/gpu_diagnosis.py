"""Why torch sees no CUDA device on a machine that has an NVIDIA GPU, in one line.

The pinned torch wheels are CUDA 13 builds, which need a recent NVIDIA driver.  On an older
driver ``torch.cuda.is_available()`` is simply False, and every message built on it alone ("no
CUDA device") sends the user looking for a GPU they can see in ``nvidia-smi``.  Ray is no help
either: it counts GPUs through NVML, which works on any driver, so a local Ray happily lists the
GPU torch cannot use.  :func:`describe_unusable_gpu` names the GPU, its driver, the CUDA version
torch was built for and what to install instead; ``make gpu-check`` prints it, and the refusals of
``evaluate.device: cuda``, ``train.use_gpu`` and ``features.use_gpu`` append it
(:func:`with_gpu_diagnosis`).

It only reads: ``nvidia-smi --query-gpu=name,driver_version --format=csv,noheader`` with a short
timeout (a wedged driver can make nvidia-smi hang), else ``/proc/driver/nvidia/version`` (the
kernel module's version; no GPU name).  Nothing found: ``None``, and the caller's "no CUDA device"
stands.  GPUs hidden on purpose (``CUDA_VISIBLE_DEVICES`` empty or ``-1``) are not diagnosed: the
user asked torch not to see them.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

logger = logging.getLogger(__name__)

PROC_VERSION = Path("/proc/driver/nvidia/version")
"""The NVIDIA kernel module's version file (read when nvidia-smi is missing or fails; tests point it elsewhere)."""
NVIDIA_SMI_TIMEOUT_S = 5.0
WHEEL_INDEX = "https://download.pytorch.org/whl"

MIN_DRIVER: dict[int, str] = {13: "580.65.06", 12: "525.60.13", 11: "450.80.02"}
"""Oldest Linux driver that runs any build of a CUDA major version (NVIDIA's minor-version
compatibility: a 12.x build runs on any driver that runs 12.0; CUDA toolkit release notes, table 2)."""
NATIVE_CUDA: tuple[tuple[str, str], ...] = (
    ("13.0", "580.65.06"), ("12.9", "575.51.03"), ("12.8", "570.26"), ("12.6", "560.28.03"),
    ("12.5", "555.42.02"), ("12.4", "550.54.14"), ("12.3", "545.23.06"), ("12.2", "535.54.03"),
    ("12.1", "530.30.02"), ("12.0", "525.60.13"), ("11.8", "520.61.05"),
)
"""(CUDA version, oldest Linux driver shipped with it), newest first: what ``nvidia-smi`` reports as
the driver's "CUDA Version" (CUDA toolkit release notes, table 3)."""
EXAMPLE_TAG: dict[int, str] = {13: "cu130", 12: "cu126", 11: "cu118"}
"""A PyTorch wheel index tag per CUDA major, as an example in the install hint (which tags a torch
version has changes from release to release: the hint names the major, the example is only that)."""


@dataclass(frozen=True)
class NvidiaGpus:
    """What the driver shows: the GPUs' names (empty when only /proc was readable) and its version."""

    names: tuple[str, ...]
    driver: str

    @property
    def label(self) -> str:
        if not self.names:
            return "NVIDIA GPU"
        if len(set(self.names)) == 1:
            return self.names[0] if len(self.names) == 1 else f"{len(self.names)} x {self.names[0]}"
        return ", ".join(self.names)


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text))


def _from_nvidia_smi(timeout_s: float) -> tuple[bool, NvidiaGpus | None]:
    """(whether nvidia-smi answered, the GPUs it listed).  "No devices were found" is an answer (no GPU:
    the loaded driver's /proc file must not be taken for one); a missing, failing or hung one is not."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return False, None
    try:
        proc = subprocess.run([exe, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=timeout_s, check=False)
    except (OSError, subprocess.SubprocessError) as err:  # a hung driver: TimeoutExpired
        logger.debug("nvidia-smi gave no answer: %s", err)
        return False, None
    rows = [line.rsplit(",", 1) for line in proc.stdout.splitlines() if "," in line]
    rows = [(name.strip(), driver.strip()) for name, driver in rows if re.fullmatch(r"\d+(\.\d+)+", driver.strip())]
    if proc.returncode != 0 or not rows:
        output = (proc.stdout + proc.stderr).strip()
        logger.debug("nvidia-smi exited %d: %s", proc.returncode, output[:200])
        return "No devices were found" in output, None
    return True, NvidiaGpus(tuple(name for name, _ in rows), rows[0][1])


def _from_proc(path: Path) -> NvidiaGpus | None:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    # "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  ..." (or "... Open Kernel Module for x86_64  580.65.06 ...")
    found = re.search(r"NVRM version:.*?\s(\d{3,}\.\d+(?:\.\d+)?)\s", text + " ")
    return NvidiaGpus((), found.group(1)) if found else None


def visible_nvidia_gpus(proc_version: Path | None = None, timeout_s: float = NVIDIA_SMI_TIMEOUT_S) -> NvidiaGpus | None:
    """The GPUs and driver the NVIDIA driver reports (nvidia-smi, else ``proc_version``), or ``None``."""
    answered, gpus = _from_nvidia_smi(timeout_s)
    if answered:
        return gpus
    return _from_proc(PROC_VERSION if proc_version is None else proc_version)


def _hidden_on_purpose() -> bool:
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    return value is not None and value.strip() in ("", "-1", "none", "NoDevFiles")


def _native_cuda(driver: str) -> str | None:
    return next((cuda for cuda, needs in NATIVE_CUDA if _version(driver) >= _version(needs)), None)


def _install_hint(driver: str) -> str:
    """How to get a torch build this driver runs: the newest CUDA major it supports, generically."""
    import torch

    major = next((m for m, needs in sorted(MIN_DRIVER.items(), reverse=True) if _version(driver) >= _version(needs)), None)
    if major is None:
        return f"upgrade the NVIDIA driver (CUDA {min(MIN_DRIVER)} builds need >= {MIN_DRIVER[min(MIN_DRIVER)]})"
    pins = [f"torch=={torch.__version__.split('+')[0]}"]
    try:
        pins.append(f"torchvision=={metadata.version('torchvision').split('+')[0]}")  # must match torch's CUDA
    except metadata.PackageNotFoundError:
        pass
    return (f"install a torch build for CUDA {major}, which this driver runs: pip install {' '.join(pins)} "
            f"--index-url {WHEEL_INDEX}/cu{major}x (x: a CUDA {major} minor the index has for that torch, "
            f"e.g. {EXAMPLE_TAG[major]})")


def describe_unusable_gpu(proc_version: Path | None = None, timeout_s: float = NVIDIA_SMI_TIMEOUT_S) -> str | None:
    """One line naming an NVIDIA GPU that torch cannot use, and why; ``None`` when torch can use CUDA,
    when no NVIDIA driver is visible, or when ``CUDA_VISIBLE_DEVICES`` hides the GPUs on purpose."""
    import torch

    if torch.cuda.is_available() or _hidden_on_purpose():
        return None
    gpus = visible_nvidia_gpus(proc_version, timeout_s)
    if gpus is None:
        return None
    native = _native_cuda(gpus.driver)
    found = f"{gpus.label} (driver {gpus.driver}{f', CUDA <= {native}' if native else ''})"
    built = torch.version.cuda
    if built is None:
        kind = "a ROCm (AMD) build" if getattr(torch.version, "hip", None) else "a CPU-only build"
        return f"{found} is present but torch {torch.__version__} is {kind}; {_install_hint(gpus.driver)}"
    needs = MIN_DRIVER.get(int(_version(built)[0]))
    if needs is not None and _version(gpus.driver) < _version(needs):
        return (f"{found} is present but torch {torch.__version__} is built for CUDA {built}, which needs NVIDIA "
                f"driver >= {needs}: upgrade the driver, or {_install_hint(gpus.driver)}")
    return (f"{found} is present but torch {torch.__version__} (CUDA {built}) cannot initialise it although the "
            f"driver supports that CUDA: check that the nvidia kernel module is loaded and /dev/nvidia* is "
            f"accessible here (container GPU access, permissions)")


def cuda_refusal(asked: str, where: str, fix: str) -> str:
    """THE one-line refusal of a CUDA setting where torch cannot use CUDA, diagnosed.

    ``asked``: the setting as the user wrote it (``train.use_gpu: true``); ``where``: "on this machine",
    "in this Ray actor", ...; ``fix``: what to set instead.  Training, the features stage and
    evaluation/predict refuse with this one sentence, so a user meets the same words everywhere.
    """
    return with_gpu_diagnosis(f"{asked} but torch.cuda.is_available() is False {where}; {fix}")


def with_gpu_diagnosis(message: str) -> str:
    """``message`` (a one-line refusal for want of CUDA) with :func:`describe_unusable_gpu` appended when
    it finds a GPU torch cannot use, so the refusal says what to fix instead of implying there is no GPU."""
    found = describe_unusable_gpu()
    return f"{message}; {found}" if found else message
