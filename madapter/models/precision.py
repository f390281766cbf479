"""Devices and numeric precision: two switches, each governing one part of the model.

* ``model.half_precision`` -- the backbone's forward pass, in training, evaluation and serving
  alike (a frozen backbone keeps nothing for backward, so half precision there costs no accuracy
  in the gradients and halves its activation memory);
* ``train.amp`` -- mixed precision of the trainable part, in training only.

Both act on CUDA only: CPU autocast in bf16 is slower than fp32 on most CPUs, so on CPU every
switch resolves to fp32, and :func:`describe` says so (metrics and MLflow record what really ran,
not what was asked for).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Literal

import torch

from madapter.config import ConfigError

logger = logging.getLogger(__name__)

AmpMode = Literal["none", "bf16", "fp16"]
DeviceSetting = Literal["auto", "cpu", "cuda"]


def resolve_device(setting: str, key: str = "evaluate.device") -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` on a machine without CUDA is a one-line
    :class:`ConfigError` naming ``key`` (silently falling back would hide a broken GPU setup), which
    names a GPU torch cannot use when there is one (:mod:`madapter.gpu_diagnosis`)."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting.startswith("cuda") and not torch.cuda.is_available():
        from madapter.gpu_diagnosis import cuda_refusal

        raise ConfigError(cuda_refusal(f"{key}: {setting} asked for", "on this machine", f"set {key}: auto or cpu"))
    return torch.device(setting)


def half_dtype() -> torch.dtype:
    """bf16 where the GPU supports it (no overflow, no scaler needed), else fp16."""
    # not emulated bf16 (V100/T4 report emulation as support, and it is slow there): fp16 instead
    return torch.bfloat16 if torch.cuda.is_bf16_supported(including_emulation=False) else torch.float16


def backbone_autocast_kwargs(half_precision: bool, trainable_backbone: bool, device: torch.device) -> dict | None:
    """``torch.autocast`` arguments for the backbone's forward (``None``: inherit the caller's region).

    ``half_precision`` on CUDA: half-precision autocast.  Otherwise a frozen backbone runs with
    autocast explicitly OFF, so an enclosing ``train.amp`` region cannot silently lower it; a
    trainable backbone (``full``/``inserted``) is part of what ``train.amp`` governs and inherits it.
    """
    if half_precision and device.type == "cuda":
        return {"device_type": "cuda", "dtype": half_dtype()}
    if trainable_backbone:
        return None
    return {"device_type": device.type, "enabled": False}


def backbone_autocast(half_precision: bool, trainable_backbone: bool, device: torch.device):
    """The context the backbone's forward runs in (see :func:`backbone_autocast_kwargs`)."""
    kwargs = backbone_autocast_kwargs(half_precision, trainable_backbone, device)
    return contextlib.nullcontext() if kwargs is None else torch.autocast(**kwargs)


def amp_dtype(amp: AmpMode, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``train.amp`` on ``device`` (``None``: full precision)."""
    if device.type != "cuda" or amp == "none":
        return None
    return torch.bfloat16 if amp == "bf16" else torch.float16


def amp_autocast(amp: AmpMode, device: torch.device):
    """Autocast region for the trainable part (a no-op where :func:`amp_dtype` is ``None``)."""
    dtype = amp_dtype(amp, device)
    return torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()


def grad_scaler(amp: AmpMode, device: torch.device) -> torch.amp.GradScaler:
    """A loss scaler for fp16 on CUDA (fp16 gradients underflow without it); disabled otherwise."""
    return torch.amp.GradScaler("cuda", enabled=amp_dtype(amp, device) == torch.float16)


def _name(dtype: torch.dtype | None) -> str:
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")


def backbone_precision(half_precision: bool, device: torch.device) -> str:
    """What the backbone really runs in on ``device`` (``bf16``/``fp16``/``fp32``)."""
    return _name(half_dtype()) if (half_precision and device.type == "cuda") else "fp32"


def describe_precision(half_precision: bool, amp: AmpMode, device: torch.device) -> dict[str, str]:
    """Both switches as configured and as effective on ``device`` (for metrics.json and MLflow tags)."""
    return {
        "device": device.type,
        "backbone_precision": backbone_precision(half_precision, device),
        "train_amp": amp,
        "train_amp_effective": _name(amp_dtype(amp, device)),
    }


def describe_recorded(half_precision: bool, amp: AmpMode, device: torch.device,
                      extracted: dict[str, str] | None) -> dict[str, str]:
    """What metrics.json and the training run's MLflow tags record: :func:`describe` plus ``backbone_device``.

    ``extracted`` is where the backbone ran for the cached features the run reads, as their
    ``features.json`` records it (:func:`madapter.data.features.feature_store.backbone_computed_on`);
    ``None`` on frames.  On features the backbone did not run in this process at all: it ran once,
    in the features stage's actors, so ITS device and precision are recorded -- this run's device
    and ``model.half_precision`` would claim e.g. bf16 for features computed on a CPU in fp32.
    ``device`` and the ``train_amp`` entries stay this run's (the head runs here).
    """
    if extracted is None:
        return {**describe_precision(half_precision, amp, device), "backbone_device": device.type}
    return {"device": device.type, "backbone_device": extracted["device"],
            "backbone_precision": extracted["backbone_precision"], "train_amp": amp,
            "train_amp_effective": _name(amp_dtype(amp, device))}
