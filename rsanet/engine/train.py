"""One training epoch: gradient accumulation, AMP, gradient clipping and the non-finite loss guard.

Host-device syncs: the loss and the gradient norm stay on the device; a step reads one flag back (are the
loss and the norm finite?), and the values themselves are read at ``runtime.log_interval`` only. The
unreadable-sample counts are summed over all ranks at the same steps, so every rank stops together.
"""
from __future__ import annotations

import contextlib
import math
import time
import warnings
from dataclasses import dataclass
from typing import Optional, Protocol

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from rsanet.config import Config
from rsanet.dist import DistContext, all_reduce_sum
from rsanet.engine.checkpoint import restore_rng_state
from rsanet.engine.loaders import check_bad_fraction, to_device
from rsanet.engine.run_state import RunState
from rsanet.engine.stop import StopRequest
from rsanet.runlog import RunLogger

__all__ = ["TrainState", "TrainParts", "Checkpointer", "NonFiniteLossError", "autocast", "train_one_epoch"]

# fp16: the run is declared diverged when the loss scale falls below this. The scaler starts at 2^16 and
# halves the scale on each overflow, so its calibration (a few skips) stays far above it; 17 overflows in a
# row from the start, or a model whose gradients overflow at any scale, end below it.
MIN_LOSS_SCALE = 1.0


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


class Checkpointer(Protocol):
    """Saves the training state when the loop asks (a stop signal, ``runtime.checkpoint_interval``); the
    engine's is :class:`rsanet.engine.runner.RunCheckpoints`. A collective: called on every rank."""

    def save_last(self, parts: "TrainParts", state: "TrainState") -> None:
        """Write ``last.pth`` of the current state."""


@dataclass
class TrainParts:
    """What one training step needs. ``model`` may be wrapped (DDP / compile); ``net`` is the bare module."""

    cfg: Config
    ctx: DistContext
    run: RunState  # world size, total batch, scaled LR of this run
    model: nn.Module
    net: nn.Module
    criterion: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: Optional[torch.amp.GradScaler]
    logger: RunLogger
    steps_per_epoch: int
    checkpointer: Optional[Checkpointer] = None  # writes last.pth mid-epoch; None: nothing is saved mid-epoch
    stop: Optional[StopRequest] = None  # SIGTERM / SIGINT: save and stop after the current step


def autocast(cfg: Config, device: torch.device):
    """The autocast context of ``train.amp`` (a no-op for 'none')."""
    if cfg.train.amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if cfg.train.amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _forward_backward(parts: TrainParts, batch: dict, sync: bool) -> torch.Tensor:
    """Loss of one micro-batch, backpropagated (scaled by 1/accumulate). DDP syncs only when ``sync``."""
    clip, label = to_device(batch, parts.ctx.device, parts.cfg.data.mean, parts.cfg.data.std)
    no_sync = isinstance(parts.model, DistributedDataParallel) and not sync
    with parts.model.no_sync() if no_sync else contextlib.nullcontext():
        with autocast(parts.cfg, parts.ctx.device):
            logits = parts.model(clip)
        loss = _labelled_loss(parts, logits.float(), label, torch.as_tensor(batch["label"]))
        scaled = loss / parts.cfg.train.accumulate
        (parts.scaler.scale(scaled) if parts.scaler is not None else scaled).backward()
    return loss.detach()


def _labelled_loss(parts: TrainParts, logits: torch.Tensor, label: torch.Tensor,
                   host_label: torch.Tensor) -> torch.Tensor:
    """The criterion over the items with a label. Label -1 marks a train item whose replacements were all
    unreadable (an all-zero clip, see ``rsanet.data.datasets``): it is left out, decided on the host."""
    keep = host_label >= 0  # (B,) on the host: no sync
    if bool(keep.all()):
        return parts.criterion(logits, label)
    if not bool(keep.any()):
        return logits.sum() * 0.0  # every parameter stays in the graph (DDP waits for all of them)
    idx = keep.nonzero().squeeze(1).to(logits.device)  # (n,); a rare path, its copy may wait for the GPU
    return parts.criterion(logits.index_select(0, idx), label.index_select(0, idx))


def _optimizer_step(parts: TrainParts, loss: torch.Tensor) -> tuple[torch.Tensor, Optional[str]]:
    """Unscale, clip, then step unless the loss or the gradient norm is not finite. Returns ``(gradient norm,
    None)`` when the step was taken, else ``(norm, why)``: ``"overflow"`` when the fp16 loss scaler backed
    off (the step is skipped and training goes on), another reason when the values are non-finite for real.

    The finiteness test is the step's only host-device sync, for fp32, bf16 and fp16 alike (a skipped step
    also reads the loss scale). The norm is computed after DDP's all-reduce: every rank decides the same.
    """
    opt, scaler = parts.optimizer, parts.scaler
    if scaler is not None:
        scaler.unscale_(opt)
    max_norm = parts.cfg.train.clip_grad_norm
    params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else math.inf)
    finite = bool(torch.isfinite(norm) & torch.isfinite(loss))  # the one sync of a step
    if finite:
        opt.step()  # not scaler.step(opt): it would read the scaler's inf flags back, a second sync
    if scaler is None:
        return norm, None if finite else "non-finite loss or gradient"
    before = None if finite else scaler.get_scale()
    scaler.update()  # halves the scale when unscale_ found inf/NaN gradients, else grows it on schedule
    if finite:
        return norm, None
    if scaler.get_scale() < before:
        return norm, "overflow"
    return norm, "non-finite loss with finite gradients (not an fp16 overflow)"


def _non_finite(parts: TrainParts, state: TrainState, loss: float, norm: float, why: str) -> NonFiniteLossError:
    last = state.last_checkpoint or "none written yet"
    return NonFiniteLossError(
        f"{why} at iteration {state.global_step + 1} (epoch {state.epoch + 1}, step {state.step_in_epoch + 1}/"
        f"{parts.steps_per_epoch}): loss {loss}, gradient norm {norm}. The run is stopped before the update. "
        f"Last good checkpoint: {last}. Resume from it with --resume auto after lowering train.lr or enabling "
        "train.clip_grad_norm / train.amp=bf16.")


def _accumulate(parts: TrainParts, it) -> tuple[torch.Tensor, float, float, int]:
    """Forward/backward ``train.accumulate`` micro-batches. Returns (mean loss on the device, data time,
    replaced, clips)."""
    accumulate = parts.cfg.train.accumulate
    losses, data_time, bad, seen = [], 0.0, 0.0, 0
    for micro in range(accumulate):
        t0 = time.perf_counter()
        batch = next(it)
        data_time += time.perf_counter() - t0
        bad += float(torch.as_tensor(batch["replaced"]).sum())
        seen += len(batch["clip"])
        losses.append(_forward_backward(parts, batch, sync=micro == accumulate - 1))
    return torch.stack(losses).mean(), data_time, bad, seen


def _guard(parts: TrainParts, state: TrainState, loss: torch.Tensor, norm: torch.Tensor, why: Optional[str],
           skipped: int) -> int:
    """Stop on non-finite values, or when the fp16 loss scale collapsed below ``MIN_LOSS_SCALE``; log an fp16
    overflow skip. Returns the number of consecutive skips."""
    if why is None:
        return 0
    loss_value, norm_value = torch.stack([loss.float(), norm.float()]).tolist()  # read on this rare path only
    if why != "overflow":
        raise _non_finite(parts, state, loss_value, norm_value, why)
    skipped, scale = skipped + 1, parts.scaler.get_scale()
    parts.logger.warning(f"fp16 loss scaler skipped iteration {state.global_step + 1} (loss {loss_value:.4f}, "
                         f"gradient norm {norm_value}); loss scale now {scale:g}")
    if scale < MIN_LOSS_SCALE:
        raise _non_finite(parts, state, loss_value, norm_value,
                          f"fp16 loss scale collapsed to {scale:g} (below {MIN_LOSS_SCALE:g}) after {skipped} "
                          "overflows in a row")
    return skipped


def train_one_epoch(parts: TrainParts, state: TrainState, loader, rng_after_iter: Optional[dict] = None,
                    stop_after: Optional[int] = None) -> bool:
    """Train the rest of epoch ``state.epoch`` from optimizer step ``state.step_in_epoch``.

    ``rng_after_iter`` (a mid-epoch resume) is restored after the loader's iterator exists, which is where
    it was captured. ``stop_after`` ends the run, as if killed, after that many optimizer steps in total.
    A stop signal (``parts.stop``) before the epoch's last step saves last.pth and ends the epoch early.
    Returns False when stopped early, True when the epoch is complete.
    """
    cfg = parts.cfg
    parts.model.train()
    it = iter(loader)
    if rng_after_iter is not None:
        restore_rng_state(rng_after_iter)
    clips_per_step = parts.run.total_batch
    bad, seen, skipped = 0.0, 0, 0
    meter, bar = _Meter(), _progress(parts.logger, cfg, parts.steps_per_epoch, state)
    while state.step_in_epoch < parts.steps_per_epoch:
        tic = time.perf_counter()
        loss, data_time, step_bad, step_seen = _accumulate(parts, it)
        bad, seen = bad + step_bad, seen + step_seen
        norm, why = _optimizer_step(parts, loss)
        parts.optimizer.zero_grad(set_to_none=True)
        skipped = _guard(parts, state, loss, norm, why, skipped)
        lr = parts.optimizer.param_groups[0]["lr"]
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*lr_scheduler.step.*")  # after a skipped fp16 step
            parts.scheduler.step()
        state.step_in_epoch += 1
        state.global_step += 1
        meter.add(loss, data_time, time.perf_counter() - tic, clips_per_step)
        if _log_due(parts, state):
            _check_bad_so_far(parts, bad, clips_per_step)
        _log_step(parts, state, meter, lr, norm, bar)
        if state.step_in_epoch < parts.steps_per_epoch:
            if parts.stop is not None and parts.stop.poll():
                _close(bar)
                _save_last(parts, state)
                return False
            if _mid_epoch_save_due(cfg, state):
                _save_last(parts, state)
        if stop_after is not None and state.global_step >= stop_after:
            _close(bar)
            return False
    _close(bar)
    total = all_reduce_sum([bad, seen])
    check_bad_fraction(float(total[0]), float(total[1]), cfg.data.max_bad_fraction, cfg.train.split)
    return True


def _save_last(parts: TrainParts, state: TrainState) -> None:
    if parts.checkpointer is not None:
        parts.checkpointer.save_last(parts, state)


def _log_due(parts: TrainParts, state: TrainState) -> bool:
    """Every ``runtime.log_interval`` steps, and at the end of the epoch (the same steps on every rank)."""
    return state.global_step % parts.cfg.runtime.log_interval == 0 or state.step_in_epoch == parts.steps_per_epoch


def _check_bad_so_far(parts: TrainParts, bad: float, clips_per_step: int) -> None:
    """Stop every rank together once the unreadable samples of all ranks exceed the budget of the whole
    epoch (a collective; a rank stopping alone would leave the others waiting in the next all-reduce)."""
    total = float(all_reduce_sum([bad])[0])
    check_bad_fraction(total, parts.steps_per_epoch * clips_per_step, parts.cfg.data.max_bad_fraction,
                       parts.cfg.train.split)


def _mid_epoch_save_due(cfg: Config, state: TrainState) -> bool:
    every = cfg.runtime.checkpoint_interval
    return every > 0 and state.global_step % every == 0


class _Meter:
    """Running means over the current log interval."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.n, self.loss, self.data, self.time, self.clips = 0, 0.0, 0.0, 0.0, 0  # loss: a device tensor once added

    def add(self, loss: torch.Tensor, data_time: float, step_time: float, clips: int) -> None:
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


def _log_step(parts: TrainParts, state: TrainState, meter: _Meter, lr: float, norm: torch.Tensor, bar) -> None:
    cfg, ctx = parts.cfg, parts.ctx
    if not _log_due(parts, state):
        if bar is not None:
            bar.update(1)
        return
    loss, norm = torch.stack([meter.loss / meter.n, norm.float()]).tolist()  # the interval's one read-back
    values = {"epoch": state.epoch + 1, "loss": loss, "lr": lr, "grad_norm": norm,
              "data_time": meter.data / meter.n, "clips_per_s": meter.clips / max(meter.time, 1e-9)}
    if bar is not None:  # values first, then the update that draws them (not one step late)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", data=f"{values['data_time']:.3f}s",
                        clips_s=f"{values['clips_per_s']:.1f}", refresh=False)
        bar.update(1)
    if ctx.device.type == "cuda":
        values["gpu_mem_gb"] = torch.cuda.max_memory_allocated(ctx.device) / 2 ** 30
    parts.logger.record("train", state.global_step, **values)
    mem = f" mem {values['gpu_mem_gb']:.1f}G" if "gpu_mem_gb" in values else ""
    parts.logger.info(
        f"epoch {state.epoch + 1}/{cfg.train.epochs} [{state.step_in_epoch}/{parts.steps_per_epoch}] "
        f"loss {values['loss']:.4f} lr {lr:.3e} grad {norm:.2f} data {values['data_time']:.3f}s "
        f"{values['clips_per_s']:.1f} clips/s{mem}", console=bar is None)
    meter.reset()
