"""Fast unit tests of the training stage's pieces, without Ray or an MLflow server."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from madapter.config import params_from_dict
from madapter.tracking import log_metrics
from madapter.train.optim import Optimisation
from madapter.train.state import checkpoint_dir_name, latest_checkpoint_dir
from madapter.train.step import EpochSums, epoch_record, train_epoch
from madapter.train.worker_status import WorkerStatus

CPU = torch.device("cpu")


def _cfg(**train):
    return params_from_dict({"train": {"epochs": 2, "lr": 0.1, "warmup_epochs": 0, **train}}).train


def _batches(n: int, size: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    return [(torch.randn(size, 3, generator=gen), torch.randint(0, 2, (size,), generator=gen)) for _ in range(n)]


@pytest.mark.integration
def test_importing_the_package_imports_neither_torch_nor_ray() -> None:
    code = "import sys, madapter.train; print(sorted({'torch', 'ray'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_train_epoch_steps_once_per_accumulation_boundary_and_at_the_end() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    cfg = _cfg(grad_accum=2)
    batches = _batches(5)
    opt = Optimisation.build(model, cfg, batches_per_epoch=len(batches), device=CPU)
    steps: list[int] = []
    sums = train_epoch(model, model, batches, opt, cfg.grad_accum, cfg.amp, CPU, steps.append)
    assert steps == [1, 2, 3, 4, 5]
    assert opt.scheduler.last_epoch == 3  # boundaries after batches 2, 4 and the last one (5)
    assert sums.seen == 20 and 0 <= sums.correct <= 20 and sums.loss_sum > 0 and sums.seconds > 0


def test_accumulating_two_half_batches_equals_one_full_batch() -> None:
    (x, y), = _batches(1, size=8)
    weights = []
    for accum, batches in ((1, [(x, y)]), (2, [(x[:4], y[:4]), (x[4:], y[4:])])):
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        cfg = _cfg(grad_accum=accum)
        opt = Optimisation.build(model, cfg, batches_per_epoch=len(batches), device=CPU)
        train_epoch(model, model, batches, opt, cfg.grad_accum, cfg.amp, CPU, lambda _step: None)
        weights.append(model.weight.detach().clone())
    torch.testing.assert_close(weights[0], weights[1])


def test_optimisation_state_round_trips() -> None:
    model = torch.nn.Linear(3, 2)
    cfg = _cfg()
    opt = Optimisation.build(model, cfg, 3, CPU)
    train_epoch(model, model, _batches(3), opt, 1, cfg.amp, CPU, lambda _step: None)
    fresh = Optimisation.build(model, cfg, 3, CPU)
    fresh.load_state_dict(opt.state_dict())
    assert fresh.scheduler.last_epoch == opt.scheduler.last_epoch == 3 and fresh.lr == opt.lr
    fresh.load_state_dict(None)  # a fresh run: nothing to load, nothing changes
    assert fresh.scheduler.last_epoch == 3


def test_epoch_record_is_the_history_line() -> None:
    val = {"loss": 0.5, "top1": 0.75, "top5": 1.0, "mean_class_acc": 0.7}
    record = epoch_record(3, EpochSums(8.0, 3.0, 4.0, 2.0, 512.0), val, 0.25, 1e-3)
    assert record == {
        "epoch": 3, "train_loss": 2.0, "train_acc": 0.75, "val_loss": 0.5, "val_acc": 0.75, "val_top5": 1.0,
        "val_mean_class_acc": 0.7, "clips_per_s": 2.0, "peak_memory_mb": 512.0, "epoch_time_s": 2.0,
        "val_time_s": 0.25, "lr": 1e-3,
    }


def test_latest_checkpoint_dir_skips_incomplete_ones(tmp_path: Path) -> None:
    for epoch in (1, 2, 10):
        (tmp_path / checkpoint_dir_name(epoch)).mkdir()
    for epoch in (1, 2):
        (tmp_path / checkpoint_dir_name(epoch) / "meta.json").write_text("{}")
    assert latest_checkpoint_dir(tmp_path) == tmp_path / "epoch-0002"  # epoch 10 has no meta.json yet


def test_log_metrics_skips_non_finite_values() -> None:
    class Client:
        def log_batch(self, run_id, metrics):
            self.logged = (run_id, metrics)

    client = Client()
    log_metrics(client, "r1", {"top1": 0.5, "top5": math.nan, "loss": math.inf}, step=4)
    run_id, metrics = client.logged
    assert run_id == "r1" and [(m.key, m.value, m.step) for m in metrics] == [("top1", 0.5, 4)]


def test_worker_status_is_rewritten_whole(tmp_path: Path) -> None:
    status = WorkerStatus(tmp_path, rank=1)
    status.update(epoch=1, step=2, state="training")
    status.update(epoch=1, state="checkpointed")
    data = json.loads((tmp_path / "workers" / "rank-1.json").read_text())
    assert data["rank"] == 1 and data["state"] == "checkpointed" and "step" not in data
    assert [p.name for p in (tmp_path / "workers").iterdir()] == ["rank-1.json"]  # no temporary left behind


@pytest.mark.parametrize("epoch, name", [(1, "epoch-0001"), (123, "epoch-0123")])
def test_checkpoint_dir_names_sort_by_epoch(epoch: int, name: str) -> None:
    assert checkpoint_dir_name(epoch) == name
