"""One training epoch: gradient accumulation, AMP, gradient clipping and the non-finite loss guard."""
from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from rsanet.config import Config
from rsanet.dist import DistContext, all_reduce_sum
from rsanet.engine.checkpoint import restore_rng_state
from rsanet.engine.loaders import check_bad_fraction, to_device
from rsanet.engine.stop import StopRequest
from rsanet.logging import RunLogger

__all__ = ["TrainState", "TrainParts", "NonFiniteLossError", "autocast", "train_one_epoch"]

# Consecutive fp16 steps skipped by the loss scaler after which the run is declared diverged.
MAX_CONSECUTIVE_SKIPS = 10


class NonFiniteLossError(RuntimeError):
    """The loss or the gradient became NaN or inf; the message names the iteration and the last checkpoint."""


@dataclass
class TrainState:
    """Counters saved in every checkpoint."""

    epoch: int = 0  # epochs completed
    step_in_epoch: int = 0  # optimizer steps done inside epoch `epoch`
    global_step: int = 0  # optimizer steps done in total
    best_top1: float = -1.0  # best validation top-1 so far (-1: none yet)
    best_epoch: int = -1  # epoch (1-based) of best_top1
    last_top1: float = -1.0  # validation top-1 of the latest evaluation
    last_checkpoint: str = ""  # newest checkpoint written (for error messages; not saved)


@dataclass
class TrainParts:
    """What one training step needs. ``model`` may be wrapped (DDP / compile); ``net`` is the bare module."""

    cfg: Config
    ctx: DistContext
    model: nn.Module
    net: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: Optional[torch.amp.GradScaler]
    logger: RunLogger
    steps_per_epoch: int
    save_last: Callable[[], None] = field(default=lambda: None)  # writes last.pth of the current state
    stop: Optional[StopRequest] = None  # SIGTERM / SIGINT: save and stop after the current step


def autocast(cfg: Config, device: torch.device):
    """The autocast context of ``train.amp`` (a no-op for 'none')."""
    if cfg.train.amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if cfg.train.amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _forward_backward(parts: TrainParts, batch: dict, sync: bool) -> torch.Tensor:
    """Loss of one micro-batch, backpropagated (scaled by 1/accumulate). DDP syncs only when ``sync``."""
    clip, label = to_device(batch, parts.ctx.device)
    no_sync = isinstance(parts.model, DistributedDataParallel) and not sync
    with parts.model.no_sync() if no_sync else contextlib.nullcontext():
        with autocast(parts.cfg, parts.ctx.device):
            logits = parts.model(clip)
        loss = parts.criterion(logits.float(), label)
        scaled = loss / parts.cfg.train.accumulate
        (parts.scaler.scale(scaled) if parts.scaler is not None else scaled).backward()
    return loss.detach()


def _optimizer_step(parts: TrainParts) -> tuple[torch.Tensor, bool]:
    """Unscale, clip, step. Returns ``(gradient norm, stepped)``; ``stepped`` is False when the fp16 scaler
    skipped the step. The norm is computed after DDP's all-reduce, so it is the same on every rank."""
    opt, scaler = parts.optimizer, parts.scaler
    if scaler is not None:
        scaler.unscale_(opt)
    max_norm = parts.cfg.train.clip_grad_norm
    params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else math.inf)
    if scaler is None:
        if not torch.isfinite(norm):
            return norm, False
        opt.step()
        return norm, True
    scale = scaler.get_scale()
    scaler.step(opt)
    scaler.update()
    return norm, scaler.get_scale() >= scale


def _non_finite(parts: TrainParts, state: TrainState, loss: float, norm: float, why: str) -> NonFiniteLossError:
    last = state.last_checkpoint or "none written yet"
    return NonFiniteLossError(
        f"{why} at iteration {state.global_step + 1} (epoch {state.epoch + 1}, step {state.step_in_epoch + 1}/"
        f"{parts.steps_per_epoch}): loss {loss}, gradient norm {norm}. The run is stopped before the update. "
        f"Last good checkpoint: {last}. Resume from it with --resume auto after lowering train.lr or enabling "
        "train.clip_grad_norm / train.amp=bf16.")


def _accumulate(parts: TrainParts, it) -> tuple[float, float, float, int]:
    """Forward/backward ``train.accumulate`` micro-batches. Returns (mean loss, data time, replaced, clips)."""
    accumulate = parts.cfg.train.accumulate
    losses, data_time, bad, seen = [], 0.0, 0.0, 0
    for micro in range(accumulate):
        t0 = time.perf_counter()
        batch = next(it)
        data_time += time.perf_counter() - t0
        bad += float(torch.as_tensor(batch["replaced"]).sum())
        seen += len(batch["clip"])
        losses.append(_forward_backward(parts, batch, sync=micro == accumulate - 1))
    return float(torch.stack(losses).mean()), data_time, bad, seen


def _guard(parts: TrainParts, state: TrainState, loss: float, norm: float, stepped: bool, skipped: int) -> int:
    """Stop on a non-finite step (or too many fp16 skips); log a skip. Returns the consecutive skip count."""
    if stepped:
        return 0
    if parts.scaler is None:
        raise _non_finite(parts, state, loss, norm, "non-finite loss or gradient")
    skipped += 1
    parts.logger.warning(f"fp16 loss scaler skipped iteration {state.global_step + 1} (loss {loss:.4f}, "
                         f"gradient norm {norm}); loss scale now {parts.scaler.get_scale():g}")
    if skipped >= MAX_CONSECUTIVE_SKIPS:
        raise _non_finite(parts, state, loss, norm, f"{skipped} consecutive fp16 steps skipped")
    return skipped


def train_one_epoch(parts: TrainParts, state: TrainState, loader, rng_after_iter: Optional[dict] = None,
                    stop_after: Optional[int] = None) -> bool:
    """Train the rest of epoch ``state.epoch`` from optimizer step ``state.step_in_epoch``.

    ``rng_after_iter`` (a mid-epoch resume) is restored after the loader's iterator exists, which is where
    it was captured. ``stop_after`` ends the run, as if killed, after that many optimizer steps in total.
    A stop signal (``parts.stop``) before the epoch's last step saves last.pth and ends the epoch early.
    Returns False when stopped early, True when the epoch is complete.
    """
    cfg, ctx = parts.cfg, parts.ctx
    parts.model.train()
    it = iter(loader)
    if rng_after_iter is not None:
        restore_rng_state(rng_after_iter)
    clips_per_step = cfg.train.batch_size * cfg.train.accumulate * ctx.world_size
    bad, seen, skipped = 0.0, 0, 0
    meter, bar = _Meter(), _progress(parts.logger, cfg, parts.steps_per_epoch, state)
    while state.step_in_epoch < parts.steps_per_epoch:
        tic = time.perf_counter()
        loss, data_time, step_bad, step_seen = _accumulate(parts, it)
        bad, seen = bad + step_bad, seen + step_seen
        norm, stepped = _optimizer_step(parts)
        parts.optimizer.zero_grad(set_to_none=True)
        skipped = _guard(parts, state, loss, float(norm), stepped, skipped)
        lr = parts.optimizer.param_groups[0]["lr"]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*")  # after a skipped fp16 step
            parts.scheduler.step()
        state.step_in_epoch += 1
        state.global_step += 1
        # This rank alone over the budget of the whole epoch (all ranks) is over it for sure: stop early.
        check_bad_fraction(bad, parts.steps_per_epoch * clips_per_step, cfg.data.max_bad_fraction, cfg.train.split)
        meter.add(loss, data_time, time.perf_counter() - tic, clips_per_step)
        _log_step(parts, state, meter, lr, float(norm), bar)
        if state.step_in_epoch < parts.steps_per_epoch:
            if parts.stop is not None and parts.stop.poll():
                _close(bar)
                parts.save_last()
                return False
            if _mid_epoch_save_due(cfg, state):
                parts.save_last()
        if stop_after is not None and state.global_step >= stop_after:
            _close(bar)
            return False
    _close(bar)
    total = all_reduce_sum([bad, seen])
    check_bad_fraction(float(total[0]), float(total[1]), cfg.data.max_bad_fraction, cfg.train.split)
    return True


def _mid_epoch_save_due(cfg: Config, state: TrainState) -> bool:
    every = cfg.runtime.checkpoint_interval
    return every > 0 and state.global_step % every == 0


class _Meter:
    """Running means over the current log interval."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.n, self.loss, self.data, self.time, self.clips = 0, 0.0, 0.0, 0.0, 0

    def add(self, loss: float, data_time: float, step_time: float, clips: int) -> None:
        self.n += 1
        self.loss += loss
        self.data += data_time
        self.time += step_time
        self.clips += clips


def _progress(logger: RunLogger, cfg: Config, total: int, state: TrainState):
    import sys
    if not (logger.is_main and cfg.runtime.progress and sys.stderr.isatty()):
        return None
    from tqdm import tqdm
    return tqdm(total=total, initial=state.step_in_epoch, desc=f"epoch {state.epoch + 1}/{cfg.train.epochs}",
                dynamic_ncols=True, leave=False)


def _close(bar) -> None:
    if bar is not None:
        bar.close()


def _log_step(parts: TrainParts, state: TrainState, meter: _Meter, lr: float, norm: float, bar) -> None:
    cfg, ctx = parts.cfg, parts.ctx
    if bar is not None:  # values first, then the update that draws them (not one step late)
        bar.set_postfix(loss=f"{meter.loss / meter.n:.4f}", lr=f"{lr:.2e}", data=f"{meter.data / meter.n:.3f}s",
                        clips_s=f"{meter.clips / max(meter.time, 1e-9):.1f}", refresh=False)
        bar.update(1)
    if state.global_step % cfg.runtime.log_interval and state.step_in_epoch != parts.steps_per_epoch:
        return
    values = {"epoch": state.epoch + 1, "loss": meter.loss / meter.n, "lr": lr, "grad_norm": norm,
              "data_time": meter.data / meter.n, "clips_per_s": meter.clips / max(meter.time, 1e-9)}
    if ctx.device.type == "cuda":
        values["gpu_mem_gb"] = torch.cuda.max_memory_allocated(ctx.device) / 2 ** 30
    parts.logger.record("train", state.global_step, **values)
    mem = f" mem {values['gpu_mem_gb']:.1f}G" if "gpu_mem_gb" in values else ""
    parts.logger.info(
        f"epoch {state.epoch + 1}/{cfg.train.epochs} [{state.step_in_epoch}/{parts.steps_per_epoch}] "
        f"loss {values['loss']:.4f} lr {lr:.3e} grad {norm:.2f} data {values['data_time']:.3f}s "
        f"{values['clips_per_s']:.1f} clips/s{mem}", console=bar is None)
    meter.reset()
