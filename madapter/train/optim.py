"""What turns gradients into updates: AdamW groups, the warm-up + cosine schedule, the grad scaler.

Bundled as :class:`Optimisation` because the four travel together: built once per worker,
stepped together at every accumulation boundary, and checkpointed and restored together, so a
resumed run continues exactly where the stopped one left off.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from madapter.config import TrainSection
from madapter.models.precision import grad_scaler


def lr_lambda(step: int, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up then cosine decay to 0, as a multiplier of the base learning rate."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases and norms (1-D tensors) nor on what the model names
    in ``no_weight_decay()`` (position embeddings, tokens: timm's convention)."""
    exempt = model.no_weight_decay() if hasattr(model, "no_weight_decay") else set()
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim <= 1 or name in exempt else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@dataclass
class Optimisation:
    """Optimiser, LR scheduler, grad scaler and loss of one worker."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    """Enabled only for fp16 on CUDA (:func:`madapter.models.precision.grad_scaler`)."""
    loss_fn: torch.nn.Module

    @classmethod
    def build(cls, model: torch.nn.Module, cfg: TrainSection, batches_per_epoch: int,
              device: torch.device) -> Optimisation:
        """AdamW on the trainable parameters; the schedule counts optimiser steps (one per
        ``train.grad_accum`` batches), warming up for ``train.warmup_epochs`` of them."""
        steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum)
        total_steps = cfg.epochs * steps_per_epoch
        warmup_steps = int(round(cfg.warmup_epochs * steps_per_epoch))
        optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_lambda(s, warmup_steps, total_steps))
        loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        return cls(optimizer, scheduler, grad_scaler(cfg.amp, device), loss_fn)

    def step(self) -> None:
        """Apply the accumulated gradients (unscaled, skipped on inf/NaN), advance the LR, clear grads."""
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Continue from a checkpoint's state (``None``: a fresh run, nothing to load)."""
        if state is None:
            return
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
