"""``run_training`` and ``run_test``: the engine pieces composed into a full (distributed) run.

Order of a run: everything that can fail on bad input (config, dataset files, pretrained weights, the
work dir, the checkpoint to resume) is checked first; only then is the process group created, so a
mistake never leaves ranks waiting for each other. Right after it, the ranks check that they all resolved
the same checkpoint to resume (node-local work dirs can differ).
"""
from __future__ import annotations

import copy
import inspect
import json
import os
import random
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from torch import nn

from rsanet.config import Config, config_to_dict, dump_config, validate
from rsanet.dist import (DistContext, all_gather_object, barrier, broadcast_buffers, destroy_distributed,
                         env_world_size, init_distributed)
from rsanet.engine.checkpoint import (CHECKPOINT_FORMAT, capture_rng_state, find_resume_checkpoint, link_checkpoint,
                                      load_checkpoint, prune_epoch_checkpoints, restore_rng_state, save_checkpoint)
from rsanet.engine.evaluate import EvalResult, evaluate, format_metrics
from rsanet.engine.loaders import build_eval_loader, build_train_loader
from rsanet.engine.optim import build_criterion, build_optimizer, build_scheduler
from rsanet.engine.train import TrainParts, TrainState, train_one_epoch
from rsanet.engine.weights import init_from_checkpoint, load_model_weights, read_model_weights
from rsanet.logging import RunLogger, get_logger
from rsanet.metrics import save_scores

__all__ = ["run_training", "run_test", "seed_everything", "configure_determinism", "prepare_model"]


# ------------------------------------------------------------------------------------------------
# Setup helpers.
# ------------------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def configure_determinism(deterministic: bool, tf32: bool = False) -> None:
    """Deterministic kernels (bit-exact resume on CPU) or the fastest ones (cuDNN autotuning); ``tf32``
    (``train.tf32``) lets fp32 convolutions and matmuls use TF32 on Ampere and newer GPUs, else they stay
    plain fp32 (PyTorch alone would use TF32 for cuDNN convolutions)."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")


def _build_datasets(cfg: Config, splits: list[str]) -> dict:
    from rsanet.data import build_dataset
    return {s: build_dataset(cfg, s) for s in dict.fromkeys(splits)}


def _check_train_labels(dataset, split: str) -> None:
    """Every training record needs a label: label -1 in a training batch means "no usable clip" (a sample
    whose replacements were all unreadable) and is left out of the loss, so unlabelled records would be
    skipped silently."""
    records = getattr(dataset, "records", None)
    unlabelled = [r.path for r in records or () if r.label < 0]
    if unlabelled:
        raise ValueError(f"the `{split}` split has {len(unlabelled)} videos without a label (first: "
                         f"{unlabelled[0]}): train.split must name labelled annotations (data.train_annotations)")


def _check_labels(dataset, split: str) -> None:
    records = getattr(dataset, "records", None)
    if records is not None and all(r.label < 0 for r in records):
        raise ValueError(f"the `{split}` split has no labels (e.g. an official test split), so it cannot "
                         "validate a training run: set train.val_split to a labelled split")


def _check_pretrained(cfg: Config) -> None:
    from rsanet.models.pretrained import check_pretrained
    check_pretrained(cfg.model)  # a missing or unreadable file, an empty offline cache, a width mismatch


def prepare_model(cfg: Config, ctx: DistContext, train: bool) -> nn.Module:
    """``build_model(cfg)`` on this process's device, channels-last and SyncBatchNorm as configured."""
    from rsanet.models import build_model
    net = build_model(cfg)
    if train and cfg.train.sync_bn and ctx.distributed:
        if ctx.device.type == "cuda":
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        else:
            get_logger().warning("train.sync_bn needs CUDA devices; BatchNorm stays per process on the CPU")
    net = net.to(ctx.device)
    if cfg.train.channels_last:
        to_channels_last(net)
    return net


def to_channels_last(net: nn.Module) -> None:
    """Channels-last weights for the 2D convolutions (the bulk of a TSN-ResNet); their outputs follow."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            m.weight.data = m.weight.data.contiguous(memory_format=torch.channels_last)


def _ddp_options() -> dict:
    """DDP flags beyond the defaults.

    ``gradient_as_bucket_view``: the ``.grad`` tensors are views into DDP's all-reduce buckets, so gradients
    are neither copied in and out of the buckets nor held twice (one gradient's worth of memory saved).

    No buffer broadcast before every forward (``forward_sync_buffers=False``; older torch calls it
    ``broadcast_buffers``): in training mode BatchNorm normalizes with batch statistics, so the running
    ones never change the loss or the gradients; they only matter for evaluation and checkpoints, which use
    rank 0's (``_validate_epoch`` broadcasts them before validating, and rank 0 saves its own). Buffers are
    still equal at the start: same seed, or the same checkpoint, on every rank.
    """
    known = inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    buffers = "forward_sync_buffers" if "forward_sync_buffers" in known else "broadcast_buffers"
    return {"gradient_as_bucket_view": True, buffers: False}


def _wrap(net: nn.Module, cfg: Config, ctx: DistContext) -> nn.Module:
    model = net
    if cfg.train.compile:
        model = torch.compile(model)
    if ctx.distributed:
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=ids, **_ddp_options())
    return model


# ------------------------------------------------------------------------------------------------
# Checkpoint state.
# ------------------------------------------------------------------------------------------------
def _checkpoint_state(parts: TrainParts, state: TrainState) -> dict:
    """The checkpoint dict; a collective (gathers every rank's RNG state), so call it on every rank."""
    rng = all_gather_object(capture_rng_state())
    counters = {k: v for k, v in asdict(state).items() if k != "last_checkpoint"}
    return {"format": CHECKPOINT_FORMAT, "model": parts.net.state_dict(), "optimizer": parts.optimizer.state_dict(),
            "scheduler": parts.scheduler.state_dict(),
            "scaler": parts.scaler.state_dict() if parts.scaler is not None else None,
            "steps_per_epoch": parts.steps_per_epoch, "world_size": parts.ctx.world_size, "rng": rng,
            "config": config_to_dict(parts.cfg), **counters}


def _save(parts: TrainParts, state: TrainState, work_dir: Path, epoch_end: bool, is_best: bool) -> None:
    """Write last.pth (rank 0), and at epoch ends link epoch_NNN.pth (and best.pth) to it."""
    ckpt = _checkpoint_state(parts, state)
    if parts.ctx.is_main:
        last = save_checkpoint(ckpt, work_dir / "last.pth")
        if epoch_end and parts.cfg.runtime.keep_epoch_checkpoints > 0:
            link_checkpoint(last, work_dir / f"epoch_{state.epoch:03d}.pth")
            prune_epoch_checkpoints(work_dir, parts.cfg.runtime.keep_epoch_checkpoints)
        if is_best:
            link_checkpoint(last, work_dir / "best.pth")
        where = f"epoch {state.epoch}" + (f" + {state.step_in_epoch} steps" if state.step_in_epoch else "")
        parts.logger.info(f"saved {last} ({where})" + (" and best.pth" if is_best else ""))
    state.last_checkpoint = str(work_dir / "last.pth")
    barrier()


def _restore(parts: TrainParts, ckpt: dict, path: Path, state: TrainState) -> Optional[dict]:
    """Load a training checkpoint into ``parts`` / ``state``; return this rank's RNG state to restore."""
    parts.net.load_state_dict(ckpt["model"])
    parts.optimizer.load_state_dict(ckpt["optimizer"])
    if ckpt["steps_per_epoch"] == parts.steps_per_epoch:
        parts.scheduler.load_state_dict(ckpt["scheduler"])
    else:
        parts.logger.warning(f"{path}: {ckpt['steps_per_epoch']} steps per epoch then, {parts.steps_per_epoch} now "
                             "(another world size or batch): the LR schedule continues from the same epoch")
        ckpt["step_in_epoch"] = 0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
            for _ in range(ckpt["epoch"] * parts.steps_per_epoch):
                parts.scheduler.step()
    if parts.scaler is not None and ckpt.get("scaler"):
        parts.scaler.load_state_dict(ckpt["scaler"])
    for key in ("epoch", "step_in_epoch", "global_step", "best_top1", "best_epoch", "last_top1"):
        setattr(state, key, ckpt[key])
    state.last_checkpoint = str(path)
    rng = ckpt["rng"]
    if len(rng) == parts.ctx.world_size and ckpt["steps_per_epoch"] == parts.steps_per_epoch:
        return rng[parts.ctx.rank]
    seed_everything(parts.cfg.runtime.seed + parts.ctx.rank + 1000 * state.epoch)
    return None


def _config_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _config_changes(a, b, f"{prefix}{key}.")
        elif a != b and not key.startswith(("world_size", "work_dir", "scaled_lr", "total_batch")):
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def _resolve_resume(work_dir: Path, resume: Optional[str]) -> Optional[tuple[Path, dict]]:
    """The checkpoint to continue from, checked before any process group exists."""
    if resume is None:
        existing = [p.name for p in (work_dir / "last.pth", work_dir / "best.pth") if p.exists()]
        if existing:
            raise FileExistsError(f"work dir {work_dir} already holds {existing}: pass --resume auto to continue "
                                  "that run, or choose another --work-dir")
        return None
    if resume == "auto":
        return find_resume_checkpoint(work_dir)
    return Path(resume), load_checkpoint(resume)


def _agree_on_resume(work_dir: Path, resumed: Optional[tuple[Path, dict]]) -> None:
    """Stop every rank, together, unless all resolved the same starting point (a collective).

    Each rank resolves ``--resume`` on its own before the process group exists. With node-local work dirs
    one node may find a checkpoint and another none, or an older one; DDP's initial broadcast would hide
    that until the step counts diverge and a collective hangs. Compared: the checkpoint (relative to the
    work dir when inside it) and its global step.
    """
    if resumed is None:
        mine = ("fresh start", 0)
    else:
        path, ckpt = resumed
        mine = (str(path.relative_to(work_dir)) if path.is_relative_to(work_dir) else str(path),
                int(ckpt["global_step"]))
    every = all_gather_object(mine)
    if len(set(every)) > 1:
        ranks: dict[tuple[str, int], list[int]] = {}
        for r, choice in enumerate(every):
            ranks.setdefault(tuple(choice), []).append(r)
        seen = ", ".join(f"rank{'s' if len(rs) > 1 else ''} {','.join(map(str, rs))}: {name}"
                         + (f" (global step {step})" if name != "fresh start" else "")
                         for (name, step), rs in ranks.items())
        raise CheckpointError(
            f"the ranks disagree on where training continues ({seen}), so they would drift apart and hang. "
            f"Each node resolves --resume in its own {work_dir}: give every node the same checkpoint (a shared "
            "work dir, or copy it) or pass --resume PATH with a file that every node can read.")


# ------------------------------------------------------------------------------------------------
# Training.
# ------------------------------------------------------------------------------------------------
@dataclass
class _Run:
    parts: TrainParts
    state: TrainState
    train_loader: object
    train_sampler: object
    val_loader: object
    val_set: object
    work_dir: Path


def _setup(cfg: Config, ctx: DistContext, work_dir: Path, datasets: dict, resumed,
           logger: RunLogger) -> tuple[_Run, Optional[dict]]:
    if ctx.is_main:
        dump_config(cfg, work_dir / "config.yaml")
    tr = cfg.train
    logger.info(f"work dir {work_dir}; {ctx.world_size} process(es) on {ctx.device}; total batch {tr.total_batch} = "
                f"{tr.batch_size} x {ctx.world_size} x {tr.accumulate}; lr {tr.scaled_lr:g} "
                f"(= {tr.lr:g} x {tr.total_batch}/{tr.lr_reference_batch})")
    seed_everything(cfg.runtime.seed)  # same initial weights on every rank
    model_cfg = copy.deepcopy(cfg)
    if resumed is not None or cfg.model.init_from:
        model_cfg.model.pretrained = None  # the checkpoint replaces every weight
    net = prepare_model(model_cfg, ctx, train=True)
    if resumed is None and cfg.model.init_from:
        _init_from(net, cfg, logger)
    train_loader, train_sampler = build_train_loader(datasets[cfg.train.split], cfg, ctx)
    steps = len(train_loader) // cfg.train.accumulate
    optimizer = build_optimizer(cfg, net)
    scaler = torch.amp.GradScaler(ctx.device.type) if cfg.train.amp == "fp16" else None
    parts = TrainParts(cfg, ctx, net, net, build_criterion(cfg).to(ctx.device), optimizer,
                       build_scheduler(cfg, optimizer, steps), scaler, logger, steps)
    state, rng = TrainState(), None
    if resumed is not None:
        path, ckpt = resumed
        for change in _config_changes(ckpt["config"], config_to_dict(cfg)):
            logger.warning(f"config differs from the checkpoint's: {change}")
        rng = _restore(parts, ckpt, path, state)
        logger.info(f"resumed from {path}: epoch {state.epoch}, step {state.step_in_epoch}/{steps}, "
                    f"best top1 {state.best_top1:.2f}")
    else:
        seed_everything(cfg.runtime.seed + ctx.rank)
    parts.model = _wrap(net, cfg, ctx)
    val_set = datasets[cfg.train.val_split]
    run = _Run(parts, state, train_loader, train_sampler, build_eval_loader(val_set, cfg, ctx), val_set, work_dir)
    parts.save_last = lambda: _save(parts, state, work_dir, epoch_end=False, is_best=False)
    return run, rng


def _init_from(net: nn.Module, cfg: Config, logger: RunLogger) -> None:
    """``model.init_from``: start from a video checkpoint's weights (optimizer, epoch, schedule stay fresh)."""
    report = init_from_checkpoint(net, cfg.model.init_from, cfg.model)
    kind = {"authors": "authors' format", "rsanet": "RSANet checkpoint", "state_dict": "state dict"}[report.kind]
    logger.info(f"model.init_from: loaded {len(report.loaded)} tensors from {report.path} ({kind})"
                + (f"; re-initialized {', '.join(report.reinitialized)} ({report.reason})" if report.reinitialized
                   else "; every tensor loaded") + (" instead of model.pretrained" if cfg.model.pretrained else ""))


def _validate_epoch(run: _Run) -> bool:
    """Evaluate, update best/last top-1 and log both. Returns True when this is a new best."""
    parts, state, cfg = run.parts, run.state, run.parts.cfg
    broadcast_buffers(parts.net)  # BN statistics of rank 0 (the ones saved) on every rank
    result = evaluate(parts.net, run.val_loader, run.val_set, cfg, parts.ctx, split=cfg.train.val_split)
    top1 = result.metrics["top1"]
    if top1 is None:
        raise ValueError(f"the validation split `{cfg.train.val_split}` has no labels: set train.val_split")
    state.last_top1 = top1
    is_best = top1 > state.best_top1
    if is_best:
        state.best_top1, state.best_epoch = top1, state.epoch
    m = result.metrics
    parts.logger.record("val", state.global_step, epoch=state.epoch, top1=m["top1"], top5=m["top5"],
                        mean_class_accuracy=m["mean_class_accuracy"], best_top1=state.best_top1,
                        best_epoch=state.best_epoch)
    parts.logger.info(f"epoch {state.epoch}/{cfg.train.epochs} validation: {format_metrics(m)} | "
                      f"last top1 {state.last_top1:.2f} | best top1 {state.best_top1:.2f} (epoch {state.best_epoch})")
    return is_best


def _epoch_loop(run: _Run, rng: Optional[dict], stop_after: Optional[int]) -> bool:
    parts, state, cfg = run.parts, run.state, run.parts.cfg
    mid_epoch = state.step_in_epoch > 0
    if rng is not None and not mid_epoch:
        restore_rng_state(rng)  # captured at an epoch end, before the next epoch's loader iterator
    while state.epoch < cfg.train.epochs:
        run.train_sampler.set_epoch(state.epoch)
        run.train_sampler.skip = state.step_in_epoch * cfg.train.accumulate * cfg.train.batch_size
        done = train_one_epoch(parts, state, run.train_loader, rng if mid_epoch else None, stop_after)
        mid_epoch = False
        if not done:
            parts.logger.info(f"stopped after {state.global_step} steps (stop_after)")
            return False
        state.epoch, state.step_in_epoch = state.epoch + 1, 0
        is_best = False
        if state.epoch % cfg.train.eval_every == 0 or state.epoch == cfg.train.epochs:
            is_best = _validate_epoch(run)
        _save(parts, state, run.work_dir, epoch_end=True, is_best=is_best)
    return True


def run_training(cfg: Config, work_dir: str | os.PathLike | None = None, resume: Optional[str] = None,
                 stop_after: Optional[int] = None) -> dict:
    """Train ``cfg`` (single process, or one rank of a torchrun job) and return a summary dict.

    ``resume``: None (the work dir must hold no checkpoint), ``"auto"`` (continue from ``last.pth``, or the
    newest readable epoch checkpoint, or start fresh when there is none) or a checkpoint path.
    ``stop_after``: stop, as if killed, after that many optimizer steps in total (tests of crash recovery).
    """
    work_dir = Path(work_dir or cfg.runtime.work_dir)
    cfg = copy.deepcopy(cfg)
    cfg.runtime.work_dir = str(work_dir)
    world = env_world_size()
    if world != cfg.runtime.world_size:
        validate(cfg, world_size=world)
    datasets = _build_datasets(cfg, [cfg.train.split, cfg.train.val_split])  # missing files fail here
    _check_labels(datasets[cfg.train.val_split], cfg.train.val_split)
    _check_train_labels(datasets[cfg.train.split], cfg.train.split)
    _check_pretrained(cfg)
    if cfg.model.init_from and not Path(cfg.model.init_from).is_file():
        raise FileNotFoundError(f"model.init_from: checkpoint not found: {cfg.model.init_from}")
    resumed = _resolve_resume(work_dir, resume)
    configure_determinism(cfg.runtime.deterministic, cfg.train.tf32)
    ctx = init_distributed(cfg.runtime.device, cfg.runtime.dist_backend, cfg.runtime.dist_timeout_minutes)
    logger = None
    try:
        logger = RunLogger(work_dir, ctx.rank, cfg.runtime.tensorboard)
        _agree_on_resume(work_dir, resumed)
        run, rng = _setup(cfg, ctx, work_dir, datasets, resumed, logger)
        del resumed  # the loaded checkpoint is in the model and optimizer now; free its CPU copy
        finished = _epoch_loop(run, rng, stop_after)
        s = run.state
        if finished:
            logger.info(f"training done: last top1 {s.last_top1:.2f}, best top1 {s.best_top1:.2f} "
                        f"(epoch {s.best_epoch}); checkpoints in {work_dir}")
        return {"work_dir": str(work_dir), "rank": ctx.rank, "finished": finished, "epoch": s.epoch,
                "global_step": s.global_step, "best_top1": s.best_top1, "best_epoch": s.best_epoch,
                "last_top1": s.last_top1}
    except Exception as e:
        if logger is not None:
            logger.error(f"{type(e).__name__}: {e}")
        raise
    finally:
        if logger is not None:
            logger.close()
        destroy_distributed()


# ------------------------------------------------------------------------------------------------
# Testing.
# ------------------------------------------------------------------------------------------------
def _load_for_test(cfg: Config, ctx: DistContext, checkpoint: Path, logger: RunLogger) -> nn.Module:
    weights = read_model_weights(checkpoint)  # the authors' .pth.tar is converted (and logged) here
    if weights.config is not None:
        for change in _config_changes(weights.config.get("model", {}), config_to_dict(cfg.model), "model."):
            logger.warning(f"model config differs from the checkpoint's: {change}")
    net = prepare_model(cfg, ctx, train=False)
    load_model_weights(net, weights, cfg.model)
    return net


def run_test(cfg: Config, checkpoint: str | os.PathLike, work_dir: str | os.PathLike | None = None) -> dict:
    """Multi-view test of ``checkpoint`` on ``test.split``; writes ``test_metrics.json`` (and ``scores.npz``
    when ``test.save_scores``) to ``work_dir`` (default: the checkpoint's folder) and returns the metrics."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    work_dir = Path(work_dir) if work_dir else checkpoint.parent
    cfg = copy.deepcopy(cfg)
    cfg.model.pretrained = None  # every weight comes from the checkpoint
    world = env_world_size()
    if world != cfg.runtime.world_size:
        validate(cfg, world_size=world)
    dataset = _build_datasets(cfg, [cfg.test.split])[cfg.test.split]
    configure_determinism(cfg.runtime.deterministic, cfg.train.tf32)
    ctx = init_distributed(cfg.runtime.device, cfg.runtime.dist_backend, cfg.runtime.dist_timeout_minutes)
    logger = RunLogger(work_dir, ctx.rank, tensorboard=False, log_name="test.log", jsonl=False)
    try:
        net = _load_for_test(cfg, ctx, checkpoint, logger)
        result = evaluate(net, build_eval_loader(dataset, cfg, ctx), dataset, cfg, ctx, split=cfg.test.split)
        if ctx.is_main:
            _write_test_outputs(result, cfg, checkpoint, work_dir, dataset)
        logger.info(f"{checkpoint} on `{cfg.test.split}` ({cfg.test.clips} clips x {cfg.test.crops} crops): "
                    f"{format_metrics(result.metrics)}")
        return result.metrics
    finally:
        logger.close()
        destroy_distributed()


def _write_test_outputs(result: EvalResult, cfg: Config, checkpoint: Path, work_dir: Path, dataset) -> None:
    metrics = dict(result.metrics, split=cfg.test.split, clips=cfg.test.clips, crops=cfg.test.crops,
                   checkpoint=str(checkpoint))
    if cfg.test.save_scores:
        path = save_scores(work_dir / "scores.npz", result.video_ids, result.labels, result.scores, result.views,
                           getattr(dataset, "classes", None), result.logits)
        metrics["scores"] = str(path)
    tmp = work_dir / "test_metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2) + "\n")
    os.replace(tmp, work_dir / "test_metrics.json")
