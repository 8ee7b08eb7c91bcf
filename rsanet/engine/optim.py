"""Optimizer, learning-rate schedule and loss of the paper's recipe (Appendix A).

- SGD with momentum and Nesterov; weight decay on weight matrices and kernels only: every parameter with
  at most one dimension (BatchNorm scales and shifts, biases) gets no decay.
- The learning rate ``train.lr`` holds for ``train.lr_reference_batch`` clips and is scaled linearly to the
  real total batch (``RunState.scaled_lr``, :mod:`rsanet.engine.run_state`).
- Linear warm-up to the scaled LR over ``warmup_epochs`` epochs, then a cosine decay to the final LR
  (``min_lr_ratio`` times the scaled LR, or ``min_lr`` when that is set). ``train.lr_schedule`` says how often the
  LR changes: ``epoch`` (:class:`EpochWarmupCosine`, the authors' code: once per epoch, before it) or
  ``step`` (:class:`WarmupCosine`, ours: every optimizer step). Either way the scheduler is stepped after
  every optimizer step.
- Label-smoothing cross-entropy.

Optimizer groups are the authors' too: their code puts conv/linear weights and the RSA ``P1``, ``I`` in a
decayed group and biases and BN parameters in groups without decay; its per-group ``lr_mult`` (2 for
biases) is overwritten by their scheduler, whose base LR is the same for every group, so every parameter
trains at one LR, as here.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from rsanet.config import Config
from rsanet.engine.run_state import RunState

__all__ = ["param_groups", "build_optimizer", "WarmupCosine", "EpochWarmupCosine", "build_scheduler",
           "build_criterion"]


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


def build_optimizer(cfg: Config, model: nn.Module, run: RunState) -> torch.optim.SGD:
    """SGD (momentum, Nesterov) at the run's scaled LR (``run.scaled_lr``) with the two weight-decay groups."""
    tr = cfg.train
    groups = [g for g in param_groups(model, tr.weight_decay) if g["params"]]
    for g in groups:
        g.pop("names")
    return torch.optim.SGD(groups, lr=run.scaled_lr, momentum=tr.momentum, nesterov=tr.nesterov and tr.momentum > 0,
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


class EpochWarmupCosine(torch.optim.lr_scheduler.LRScheduler):
    """The authors' schedule: the LR changes once per epoch. Step it after every optimizer step.

    Their ``WarmupCosineLR`` (``ops/CosineAnnealingLR.py``, ``milestones=[W, E]``, ``warmup_iters=W``,
    ``warmup_factor=1e-3``, ``min_ratio=m``) is stepped once at the start of every epoch, before training
    it, so epoch ``e`` (from 0) trains at its value for ``k = e + 1``:

    * ``k < W``: ``lr * (1e-3 * (1 - k / W) + k / W)`` (epoch 0 of a 5-epoch warm-up trains at 0.2008 lr);
    * else: ``lr * m + (lr - lr * m) * (1 + cos(pi * min((k - W) / (E - W), 1))) / 2``, so epoch ``W - 1`` is
      the peak and the last epoch trains at ``lr * m``.

    The values are computed in their floating-point order, so with lr 0.02, W = 5, E = 80 and m = 1e-3 they
    print as 0.00402, 0.00801, ..., 0.02000, 0.01999, ..., 0.00002: the LR column of the authors' SS-V1 and
    SS-V2 logs. Its state is plain numbers (checkpoints load with ``weights_only=True``).
    """

    WARMUP_START = 1e-3  # their warmup_factor: the factor at k = 0, never trained at (k starts at 1)

    def __init__(self, optimizer: torch.optim.Optimizer, steps_per_epoch: int, epochs: int, warmup_epochs: float,
                 min_factor: float = 0.0, last_epoch: int = -1):
        if steps_per_epoch < 1 or epochs < 1 or not 0 <= warmup_epochs <= epochs:
            raise ValueError(f"need steps_per_epoch >= 1 ({steps_per_epoch}), epochs >= 1 ({epochs}) and "
                             f"0 <= warmup_epochs ({warmup_epochs}) <= epochs")
        self.steps_per_epoch = int(steps_per_epoch)
        self.epochs = int(epochs)
        self.warmup_epochs = float(warmup_epochs)
        self.min_factor = float(min_factor)
        super().__init__(optimizer, last_epoch)

    def epoch_lr(self, base_lr: float, epoch: int) -> float:
        """The LR that epoch ``epoch`` (from 0) trains at, for a base LR ``base_lr``."""
        k, w = epoch + 1, self.warmup_epochs
        if k < w:
            alpha = k / w
            return base_lr * (self.WARMUP_START * (1 - alpha) + alpha)
        decay = self.epochs - w
        fraction = min((k - w) / decay, 1.0) if decay > 0 else 1.0
        low = base_lr * self.min_factor
        return low + (base_lr - low) * (1 + math.cos(math.pi * fraction)) / 2

    def get_lr(self) -> list[float]:
        epoch = self.last_epoch // self.steps_per_epoch  # last_epoch counts optimizer steps here
        return [self.epoch_lr(base, epoch) for base in self.base_lrs]


def build_scheduler(cfg: Config, optimizer: torch.optim.Optimizer, steps_per_epoch: int,
                    run: RunState) -> torch.optim.lr_scheduler.LRScheduler:
    """The scheduler of ``train.lr_schedule``: ``epoch`` (:class:`EpochWarmupCosine`) or ``step`` (a LambdaLR
    of :class:`WarmupCosine`, warm-up over ``round(warmup_epochs * steps_per_epoch)`` steps, then cosine).

    Call ``scheduler.step()`` after every optimizer step.
    """
    tr = cfg.train
    if steps_per_epoch < 1:
        raise ValueError(f"an epoch must have at least one optimizer step, got {steps_per_epoch}")
    if tr.min_lr > 0:  # an absolute final LR replaces the ratio
        min_factor = tr.min_lr / run.scaled_lr if run.scaled_lr > 0 else 0.0
    else:
        min_factor = tr.min_lr_ratio
    if tr.lr_schedule == "epoch":
        epochs = max(tr.epochs, 1)
        return EpochWarmupCosine(optimizer, steps_per_epoch, epochs, min(tr.warmup_epochs, epochs), min_factor)
    total = max(tr.epochs * steps_per_epoch, 1)
    warmup = min(round(tr.warmup_epochs * steps_per_epoch), total)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup, total, min_factor))


def build_criterion(cfg: Config) -> nn.Module:
    """Cross-entropy with ``train.label_smoothing``."""
    return nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)
