"""The training DataLoader pins its batches exactly when the worker's device is CUDA.

Without page-locked memory the step's ``.to(device, non_blocking=True)`` copies are synchronous, so
a GPU worker waits for every batch's host-to-device copy.  Building the loader touches no CUDA, so
this runs on a CPU-only machine.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import SequentialSampler

from madapter.train.source import pin_memory, train_loader


def _collate(items: list) -> tuple:
    return torch.tensor(items), torch.zeros(len(items), dtype=torch.long)


@pytest.mark.parametrize("device,pinned", [("cuda", True), ("cuda:1", True), ("cpu", False)])
def test_loader_pins_iff_cuda(device: str, pinned: bool) -> None:
    data = list(range(6))
    loader = train_loader(data, _collate, SequentialSampler(data), batch_size=4, workers=0,
                          device=torch.device(device))
    assert pin_memory(torch.device(device)) is pinned
    assert loader.pin_memory is pinned
    assert loader.batch_size == 4 and loader.num_workers == 0 and loader.collate_fn is _collate


def test_cpu_loader_yields_the_batches() -> None:
    data = list(range(6))
    batches = list(train_loader(data, _collate, SequentialSampler(data), 4, 0, torch.device("cpu")))
    assert [b[0].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5]]  # drop_last=False: the tail batch too
