"""Optimizer, learning-rate schedule and loss of the paper's recipe (Appendix A).

- SGD with momentum and Nesterov; weight decay on weight matrices and kernels only: every parameter with
  at most one dimension (BatchNorm scales and shifts, biases) gets no decay.
- The learning rate ``train.lr`` holds for ``train.lr_reference_batch`` clips and is scaled linearly to the
  real total batch (``train.scaled_lr``, derived by the config).
- Per-iteration (per optimizer step) linear warm-up to ``scaled_lr`` over ``warmup_epochs`` epochs, then a
  cosine decay to ``min_lr`` at the last step.
- Label-smoothing cross-entropy.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from rsanet.config import Config

__all__ = ["param_groups", "build_optimizer", "WarmupCosine", "build_scheduler", "build_criterion"]


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two SGD groups: decayed (parameters of 2+ dims) and not decayed (BN parameters and biases).

    Frozen parameters (``requires_grad=False``) are left out. Each group carries the parameter names
    (``names``) so that logs and tests can tell what went where.
    """
    decay, no_decay, decay_names, no_decay_names = [], [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1:
            no_decay.append(p)
            no_decay_names.append(name)
        else:
            decay.append(p)
            decay_names.append(name)
    return [{"params": decay, "weight_decay": weight_decay, "names": decay_names},
            {"params": no_decay, "weight_decay": 0.0, "names": no_decay_names}]


def build_optimizer(cfg: Config, model: nn.Module) -> torch.optim.SGD:
    """SGD (momentum, Nesterov) at ``train.scaled_lr`` with the two weight-decay groups."""
    tr = cfg.train
    groups = [g for g in param_groups(model, tr.weight_decay) if g["params"]]
    for g in groups:
        g.pop("names")
    return torch.optim.SGD(groups, lr=tr.scaled_lr, momentum=tr.momentum, nesterov=tr.nesterov and tr.momentum > 0,
                           weight_decay=tr.weight_decay)


class WarmupCosine:
    """Learning-rate factor of optimizer step ``s`` (counted from 0), relative to the base LR.

    Steps ``0 .. W-1`` rise linearly, ``(s + 1) / W``, so that step ``W-1`` reaches the base LR and the first
    step is not wasted at zero. Steps ``W .. S-1`` follow ``m + (1 - m) * (1 + cos(pi * (s - W) / (S - W))) / 2``
    with ``m = min_lr / base_lr``. A plain object of numbers, so that LambdaLR can save it in a checkpoint.
    """

    def __init__(self, warmup_steps: int, total_steps: int, min_factor: float = 0.0):
        if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
            raise ValueError(f"need 0 <= warmup_steps ({warmup_steps}) <= total_steps ({total_steps}), total >= 1")
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.min_factor = float(min_factor)

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        decay_steps = max(self.total_steps - self.warmup_steps, 1)
        progress = min((step - self.warmup_steps) / decay_steps, 1.0)
        return self.min_factor + (1.0 - self.min_factor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(cfg: Config, optimizer: torch.optim.Optimizer,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step LambdaLR: warm-up over ``round(warmup_epochs * steps_per_epoch)`` steps, then cosine.

    Call ``scheduler.step()`` after every optimizer step.
    """
    tr = cfg.train
    if steps_per_epoch < 1:
        raise ValueError(f"an epoch must have at least one optimizer step, got {steps_per_epoch}")
    total = max(tr.epochs * steps_per_epoch, 1)
    warmup = min(round(tr.warmup_epochs * steps_per_epoch), total)
    min_factor = tr.min_lr / tr.scaled_lr if tr.scaled_lr > 0 else 0.0
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup, total, min_factor))


def build_criterion(cfg: Config) -> nn.Module:
    """Cross-entropy with ``train.label_smoothing``."""
    return nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)
