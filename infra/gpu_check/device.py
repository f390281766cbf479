"""Where the work ran: CUDA availability, the allocator's peak, device memory seen from outside a process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from infra.gpu_check.common import NO_CUDA, CheckFailed


def cuda_unavailable_line() -> str | None:
    """``None`` when CUDA works, else the one line that explains why the check cannot run here: a GPU
    torch cannot use (old driver, CPU-only torch; :mod:`madapter.gpu_diagnosis`) is named as such."""
    import torch

    from madapter.gpu_diagnosis import describe_unusable_gpu

    if torch.cuda.is_available():
        return None
    unusable = describe_unusable_gpu()
    if unusable:
        return f"gpu-check: {unusable}"
    if torch.version.cuda is None:
        return f"{NO_CUDA} and a CUDA build of torch (this torch {torch.__version__} is CPU-only)"
    return NO_CUDA


def evaluated_weight_bytes(checkpoint: Path, source: str) -> int:
    """fp32 bytes of the weights of the model that runs on ``source``: the head alone on cached features
    (``adapter.*``: what evaluate on features loads), the full model (backbone included) on frames."""
    from madapter.models.checkpoint import load_checkpoint

    if source not in ("frames", "features"):
        raise ValueError(f"unknown train.source {source!r}: expected frames or features")
    model, _ = load_checkpoint(checkpoint, map_location="cpu")
    weights = model.adapter.parameters() if source == "features" else model.parameters()
    return sum(p.numel() * p.element_size() for p in weights)


def cuda_peak_of(fn: Callable[[], Any]) -> tuple[Any, int]:
    """``fn()`` and the CUDA allocator's peak bytes while it ran (0 when it never touched the GPU)."""
    import torch

    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    baseline = torch.cuda.memory_allocated()
    result = fn()
    torch.cuda.synchronize()
    return result, torch.cuda.max_memory_allocated() - baseline


def require_on_gpu(what: str, peak: int, checkpoint: Path, source: str) -> str:
    """CheckFailed unless ``peak`` shows the weights of the model that ran on ``source`` (head or full
    model: :func:`evaluated_weight_bytes`) were on the GPU; else the detail text."""
    weights = evaluated_weight_bytes(checkpoint, source)
    model = "head" if source == "features" else "full model"
    # Half of the fp32 weights: holds whether the backbone's weights stay fp32 or are cast to bf16.
    if peak < weights // 2:
        raise CheckFailed(
            f"{what} allocated {peak / 2**20:.2f} MiB on cuda, less than half the {model}'s {weights / 2**20:.2f} MiB "
            f"of weights ({source}): it did not run on the GPU (check evaluate.device and the device code)"
        )
    return f"{peak / 2**20:.2f} MiB allocated on cuda for the {model}'s {weights / 2**20:.2f} MiB of weights"


def device_memory_growth(fn: Callable[[], Any], interval_s: float = 0.2) -> tuple[Any, float]:
    """``fn()`` and the largest growth (MiB) of device memory in use, summed over every GPU, while it ran.

    Polled from this process with ``cudaMemGetInfo``, so it sees what OTHER processes allocate (a Ray
    actor, whose allocator this process cannot read), on whichever GPU Ray gave them.
    """
    import threading

    import torch

    devices = range(torch.cuda.device_count())
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    free_before = [torch.cuda.mem_get_info(d)[0] for d in devices]  # also creates this process's contexts first
    growth = [0]
    done = threading.Event()

    def poll() -> None:
        while not done.wait(interval_s):
            used = sum(before - torch.cuda.mem_get_info(d)[0] for d, before in zip(devices, free_before, strict=True))
            growth[0] = max(growth[0], used)

    thread = threading.Thread(target=poll, name="gpu-check-memory-poll", daemon=True)
    thread.start()
    try:
        result = fn()
    finally:
        done.set()
        thread.join()
    return result, growth[0] / 2**20


def cosine(a: Any, b: Any) -> float:
    """Cosine similarity of two arrays of the same shape, in float64."""
    import numpy as np

    x, y = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    return float(x @ y / max(np.linalg.norm(x) * np.linalg.norm(y), 1e-30))


def softmax(logits: Any) -> Any:
    import numpy as np

    z = np.asarray(logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)
