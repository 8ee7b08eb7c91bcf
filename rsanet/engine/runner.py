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

from rsanet.config import Config, config_to_dict, dump_config
from rsanet.dist import (
    DistContext,
    all_gather_object,
    barrier,
    broadcast_buffers,
    destroy_distributed,
    init_distributed,
)
from rsanet.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    capture_rng_state,
    find_resume_checkpoint,
    link_checkpoint,
    load_checkpoint,
    prune_epoch_checkpoints,
    restore_rng_state,
    save_checkpoint,
)
from rsanet.engine.evaluate import EvalResult, evaluate, format_metrics
from rsanet.engine.loaders import build_eval_loader, build_train_loader
from rsanet.engine.optim import build_criterion, build_optimizer, build_scheduler
from rsanet.engine.run_state import RunState
from rsanet.engine.stop import StopRequest, signal_name
from rsanet.engine.train import TrainParts, TrainState, train_one_epoch
from rsanet.engine.weights import init_from_checkpoint, load_model_weights, read_model_weights
from rsanet.metrics import per_class_report, save_scores
from rsanet.runlog import RunLogger, get_logger
from rsanet.storage import check_writable, storage_error

__all__ = ["run_training", "run_test", "seed_everything", "configure_determinism", "prepare_model", "RunCheckpoints"]


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


Note = tuple[str, str]  # (level "info" | "warning", message), logged once the run's logger exists


def _has_split(cfg: Config, split: str) -> bool:
    """False when the config gives ``split`` no data (e.g. ``data.val_annotations: null``)."""
    from rsanet.data.sets import dataset_module
    return dataset_module(cfg.data.dataset).has_split(cfg.data, split)


def _prepare_data(cfg: Config, splits: list[str], train_split: Optional[str] = None) -> tuple[dict, list[Note]]:
    """Resolve what a list dataset leaves to its files, build the datasets of ``splits`` and run the start-up
    checks (unlabelled training entries, backend mismatch, missing entries); ``cfg`` is updated in place."""
    from rsanet.data.check import check_entries, check_train_labels, resolve_from_files
    notes = resolve_from_files(cfg, splits)
    datasets = _build_datasets(cfg, splits)
    for split, dataset in datasets.items():
        source = getattr(cfg.data, f"{split}_annotations", None) or f"the {split} split"
        if split == train_split:
            check_train_labels(dataset, source)
        if getattr(dataset, "decoder", None) is not None:
            notes += check_entries(dataset, split, source, cfg.data.max_bad_fraction)
    return datasets, notes


def _available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _clamp_workers(cfg: Config) -> list[Note]:
    """``data.num_workers`` at most the CPUs this process may use (more only compete for them)."""
    cpus = _available_cpus()
    if cfg.data.num_workers <= cpus:
        return []
    note = ("info", f"data.num_workers {cfg.data.num_workers} -> {cpus}: this process may use {cpus} CPUs")
    cfg.data.num_workers = cpus
    return [note]


def _log_notes(logger: RunLogger, notes: list[Note]) -> None:
    for level, message in notes:
        (logger.warning if level == "warning" else logger.info)(message)


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
            "steps_per_epoch": parts.steps_per_epoch, "run_state": parts.run.as_dict(), "rng": rng,
            "config": config_to_dict(parts.cfg), **counters}


@dataclass
class RunCheckpoints:
    """The checkpoints of a run in ``work_dir``: ``last.pth``, ``epoch_NNN.pth`` and ``best.pth``. The train
    loop's :class:`~rsanet.engine.train.Checkpointer` (it calls :meth:`save_last` on a stop signal and every
    ``runtime.checkpoint_interval`` steps); the epoch loop calls :meth:`save` at every epoch end."""

    work_dir: Path

    def save(self, parts: TrainParts, state: TrainState, epoch_end: bool = False, is_best: bool = False) -> None:
        """Write last.pth (rank 0), and at epoch ends link epoch_NNN.pth (and best.pth) to it. A collective."""
        ckpt = _checkpoint_state(parts, state)
        if parts.ctx.is_main:
            last = save_checkpoint(ckpt, self.work_dir / "last.pth")
            if epoch_end and parts.cfg.runtime.keep_epoch_checkpoints > 0:
                link_checkpoint(last, self.work_dir / f"epoch_{state.epoch:03d}.pth")
                prune_epoch_checkpoints(self.work_dir, parts.cfg.runtime.keep_epoch_checkpoints)
            if is_best:
                link_checkpoint(last, self.work_dir / "best.pth")
            where = f"epoch {state.epoch}" + (f" + {state.step_in_epoch} steps" if state.step_in_epoch else "")
            parts.logger.info(f"saved {last} ({where})" + (" and best.pth" if is_best else ""))
        state.last_checkpoint = str(self.work_dir / "last.pth")
        barrier()

    def save_last(self, parts: TrainParts, state: TrainState) -> None:
        self.save(parts, state)


_SCHEDULE_KEYS = ("train.epochs", "train.lr", "train.warmup_epochs", "train.min_lr", "train.lr_reference_batch",
                  "train.batch_size", "train.accumulate", "train.lr_schedule")


def _load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict, path: Path) -> None:
    """The saved per-parameter state (momentum buffers) under this config's hyperparameters (lr, momentum,
    weight decay...): a changed value in the config applies from the resume point."""
    fresh = optimizer.state_dict()["param_groups"]
    old = saved["param_groups"]
    if [len(g["params"]) for g in old] != [len(g["params"]) for g in fresh]:
        raise CheckpointError(f"{path}: its optimizer holds parameter groups of {[len(g['params']) for g in old]} "
                              f"tensors, this model's {[len(g['params']) for g in fresh]}")
    optimizer.load_state_dict({"state": saved["state"],
                               "param_groups": [dict(new, params=o["params"]) for new, o in zip(fresh, old)]})


def _position_scheduler(scheduler: torch.optim.lr_scheduler.LRScheduler, steps_done: int) -> None:
    """Put the config's schedule at optimizer step ``steps_done`` (the LR of the next step is set)."""
    scheduler.last_epoch = steps_done - 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()"
        scheduler.step()


_SCHEDULE_FIELDS = ("lr_lambdas", "base_lrs", "steps_per_epoch", "epochs", "warmup_epochs", "min_factor")


def _schedule_signature(state: dict) -> dict:
    """What defines a schedule (either kind of rsanet.engine.optim), not where it stands: from a state dict."""
    return {k: state.get(k) for k in _SCHEDULE_FIELDS}


def _schedule_note(parts: TrainParts, ckpt: dict, steps_done: int) -> Optional[str]:
    """One line on how the LR schedule continues when the config's differs from the checkpoint's."""
    if (_schedule_signature(ckpt["scheduler"]) == _schedule_signature(parts.scheduler.state_dict())
            and ckpt["steps_per_epoch"] == parts.steps_per_epoch):
        return None
    tr = parts.cfg.train
    keys = [c for c in _config_changes(ckpt["config"], config_to_dict(parts.cfg)) if c.startswith(_SCHEDULE_KEYS)]
    old_batch = (ckpt.get("run_state") or {}).get("total_batch")
    if old_batch is not None and old_batch != parts.run.total_batch:
        keys.append(f"total batch: {old_batch} -> {parts.run.total_batch}")
    old_lr, new_lr = ckpt["optimizer"]["param_groups"][0]["lr"], parts.optimizer.param_groups[0]["lr"]
    total, peak = tr.epochs * parts.steps_per_epoch, parts.scheduler.base_lrs[0]
    fn = parts.scheduler.lr_lambdas[0] if hasattr(parts.scheduler, "lr_lambdas") else parts.scheduler
    warmup = round(tr.warmup_epochs * parts.steps_per_epoch)
    phase = f"warm-up to {peak:.3g} until step {warmup}, then cosine" if steps_done < warmup else "cosine"
    return (f"LR schedule of this config from the resume point ({'; '.join(keys) or 'another total batch'}): "
            f"step {steps_done + 1} of {total} (epoch {steps_done // parts.steps_per_epoch + 1} of {tr.epochs}) at "
            f"LR {new_lr:.4g} instead of {old_lr:.4g}, {phase} to {peak * fn.min_factor:g} at step {total} "
            f"({tr.lr_schedule} schedule)")


def _restore(parts: TrainParts, ckpt: dict, path: Path, state: TrainState) -> Optional[dict]:
    """Load a training checkpoint into ``parts`` / ``state``; return this rank's RNG state to restore.

    Weights, momentum buffers, loss scale, counters and RNG states come from the checkpoint; the
    optimizer's hyperparameters and the LR schedule are this config's, positioned at the resume step.
    """
    try:
        parts.net.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit the model of this config: {str(e).splitlines()[0]}") from None
    _load_optimizer_state(parts.optimizer, ckpt["optimizer"], path)
    if ckpt["steps_per_epoch"] != parts.steps_per_epoch:
        parts.logger.warning(f"{path}: {ckpt['steps_per_epoch']} steps per epoch then, {parts.steps_per_epoch} now "
                             "(another world size or batch): the LR schedule continues from the same epoch")
        ckpt["step_in_epoch"] = 0
    steps_done = ckpt["epoch"] * parts.steps_per_epoch + ckpt["step_in_epoch"]
    _position_scheduler(parts.scheduler, steps_done)
    note = _schedule_note(parts, ckpt, steps_done)
    if note:
        parts.logger.info(note)
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
        elif a != b and key != "work_dir":
            out.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return out


def _resolve_resume(work_dir: Path, resume: Optional[str], skipped: list[str]) -> Optional[tuple[Path, dict]]:
    """The checkpoint to continue from, checked before any process group exists; files that ``--resume
    auto`` had to skip (truncated, unreadable) are appended to ``skipped``."""
    if resume is None:
        existing = [p.name for p in (work_dir / "last.pth", work_dir / "best.pth") if p.exists()]
        if existing:
            raise FileExistsError(f"work dir {work_dir} already holds {existing}: pass --resume auto to continue "
                                  "that run, or choose another --work-dir")
        return None
    if resume == "auto":
        return find_resume_checkpoint(work_dir, warn=skipped.append)
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


def _meta_state(cfg: Config) -> dict:
    """The model's state dict on the meta device: names, shapes and dtypes, without memory or work."""
    from rsanet.models import build_model
    mcfg = copy.deepcopy(cfg)
    mcfg.model.pretrained = None
    with torch.device("meta"):
        return build_model(mcfg).state_dict()


def _check_resume(cfg: Config, resumed: Optional[tuple[Path, dict]], want: dict) -> None:
    """Refuse a checkpoint this config cannot continue: another model (``want`` is this config's meta state
    dict), or more epochs done than ``train.epochs``."""
    if resumed is None:
        return
    path, ckpt = resumed
    have = {k: tuple(v.shape) for k, v in ckpt["model"].items() if isinstance(v, torch.Tensor)}
    wrong = [k for k in want if have.get(k) != tuple(want[k].shape)] + [k for k in have if k not in want]
    if wrong:
        diffs = _config_changes(ckpt["config"].get("model", {}), config_to_dict(cfg.model), "model.")
        first = wrong[0]
        here = tuple(want[first].shape) if first in want else "absent"
        detail = "; ".join(diffs[:4]) or (f"{len(wrong)} weights differ, e.g. {first}: {have.get(first, 'absent')} "
                                          f"in the checkpoint, {here} here")
        raise CheckpointError(f"{path} holds another model than this config ({detail}): resume from a checkpoint "
                              "of this config, or train it in a new work dir")
    if ckpt["epoch"] > cfg.train.epochs:
        raise CheckpointError(f"{path} has completed {ckpt['epoch']} epochs, more than train.epochs="
                              f"{cfg.train.epochs}: a schedule cannot end before the point it resumes from; set "
                              f"train.epochs={ckpt['epoch']} or more")


# ------------------------------------------------------------------------------------------------
# Training.
# ------------------------------------------------------------------------------------------------
@dataclass
class _Run:
    parts: TrainParts
    state: TrainState
    train_loader: object
    train_sampler: object
    val_loader: object  # None without a validation split
    val_set: object
    checkpoints: RunCheckpoints

    @property
    def work_dir(self) -> Path:
        return self.checkpoints.work_dir


def _write_run_files(cfg: Config, run: RunState, work_dir: Path) -> None:
    """``config.yaml`` (the resolved config) and ``run_state.json`` (what this run derived from it)."""
    path = work_dir / "config.yaml"
    try:
        dump_config(cfg, path)
    except OSError as e:
        path.with_name(path.name + ".tmp").unlink(missing_ok=True)
        raise storage_error(path, e) from None
    run.save(work_dir / "run_state.json")


def _build_parts(cfg: Config, ctx: DistContext, run: RunState, datasets: dict, resumed,
                 logger: RunLogger) -> tuple[TrainParts, object, object]:
    """The model (ImageNet, ``model.init_from`` or left for the checkpoint), loader, optimizer and schedule."""
    seed_everything(cfg.runtime.seed)  # same initial weights on every rank
    model_cfg = copy.deepcopy(cfg)
    if resumed is not None or cfg.model.init_from:
        model_cfg.model.pretrained = None  # the checkpoint replaces every weight
    net = prepare_model(model_cfg, ctx, train=True)
    if resumed is None and cfg.model.init_from:
        _init_from(net, cfg, logger)
    train_loader, train_sampler = build_train_loader(datasets[cfg.train.split], cfg, ctx, run)
    steps = len(train_loader) // run.accumulate
    optimizer = build_optimizer(cfg, net, run)
    scaler = torch.amp.GradScaler(ctx.device.type) if cfg.train.amp == "fp16" else None
    parts = TrainParts(cfg, ctx, run, net, net, build_criterion(cfg).to(ctx.device), optimizer,
                       build_scheduler(cfg, optimizer, steps, run), scaler, logger, steps)
    return parts, train_loader, train_sampler


def _setup(cfg: Config, ctx: DistContext, work_dir: Path, datasets: dict, resumed,
           logger: RunLogger) -> tuple[_Run, Optional[dict]]:
    run_state = RunState.of(cfg, ctx.world_size)
    if ctx.is_main:
        _write_run_files(cfg, run_state, work_dir)
    logger.info(f"work dir {work_dir}; {ctx.world_size} process(es) on {ctx.device}; {run_state.describe()}")
    parts, train_loader, train_sampler = _build_parts(cfg, ctx, run_state, datasets, resumed, logger)
    parts.checkpointer = checkpoints = RunCheckpoints(work_dir)
    state, rng = TrainState(), None
    if resumed is not None:
        path, ckpt = resumed
        changes = _config_changes(ckpt["config"], config_to_dict(cfg))
        if changes:
            logger.warning("config changed since the checkpoint; this config applies: " + "; ".join(changes))
        rng = _restore(parts, ckpt, path, state)
        logger.info(f"resumed from {path}: epoch {state.epoch}, step {state.step_in_epoch}/{parts.steps_per_epoch}, "
                    f"best top1 {state.best_top1:.2f}")
    else:
        seed_everything(cfg.runtime.seed + ctx.rank)
    parts.model = _wrap(parts.net, cfg, ctx)
    val_set = datasets.get(cfg.train.val_split)
    if val_set is None:
        logger.info(f"no validation: data.{cfg.train.val_split}_annotations is null; best.pth is the last epoch")
    val_loader = build_eval_loader(val_set, cfg, ctx) if val_set is not None else None
    return _Run(parts, state, train_loader, train_sampler, val_loader, val_set, checkpoints), rng


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


def _end_epoch(run: _Run) -> None:
    """Validate when due (no validation split: best.pth follows last.pth) and save the epoch end. If the
    validation data turn out unreadable, the epoch is saved before the error is raised."""
    from rsanet.data import BadDataError
    parts, state, cfg = run.parts, run.state, run.parts.cfg
    is_best = run.val_set is None
    if run.val_set is not None and (state.epoch % cfg.train.eval_every == 0 or state.epoch == cfg.train.epochs):
        try:
            is_best = _validate_epoch(run)
        except BadDataError:
            run.checkpoints.save(parts, state, epoch_end=True, is_best=False)
            parts.logger.error(f"validation after epoch {state.epoch} failed; the epoch is saved in last.pth")
            raise
    run.checkpoints.save(parts, state, epoch_end=True, is_best=is_best)


def _log_stop(run: _Run) -> None:
    s, parts = run.state, run.parts
    parts.logger.warning(f"{signal_name(parts.stop.signum)}: stopped after iteration {s.global_step} (epoch "
                         f"{s.epoch + (s.step_in_epoch > 0)}, step {s.step_in_epoch or parts.steps_per_epoch}/"
                         f"{parts.steps_per_epoch}); {run.work_dir / 'last.pth'} holds this state. Continue with "
                         "--resume auto")


def _epoch_loop(run: _Run, rng: Optional[dict], stop_after: Optional[int]) -> bool:
    parts, state, cfg = run.parts, run.state, run.parts.cfg
    mid_epoch = state.step_in_epoch > 0
    if rng is not None and not mid_epoch:
        restore_rng_state(rng)  # captured at an epoch end, before the next epoch's loader iterator
    while state.epoch < cfg.train.epochs:
        run.train_sampler.set_epoch(state.epoch)
        run.train_sampler.skip = state.step_in_epoch * parts.run.clips_per_process
        done = train_one_epoch(parts, state, run.train_loader, rng if mid_epoch else None, stop_after)
        mid_epoch = False
        if not done:
            if parts.stop is not None and parts.stop.signum:
                _log_stop(run)
            else:
                parts.logger.info(f"stopped after {state.global_step} steps (stop_after)")
            return False
        state.epoch, state.step_in_epoch = state.epoch + 1, 0
        _end_epoch(run)
        if parts.stop is not None and state.epoch < cfg.train.epochs and parts.stop.agree():
            _log_stop(run)
            return False
    return True


def _checks_before_start(cfg: Config, work_dir: Path, resume: Optional[str]) -> tuple[dict, object, list[Note]]:
    """Everything that can fail on bad input, before any process group exists: the datasets, the ImageNet
    weights, the checkpoint to resume, the work dir. Returns (datasets, resumed, notes to log)."""
    val = cfg.train.val_split if _has_split(cfg, cfg.train.val_split) else None
    datasets, notes = _prepare_data(cfg, [cfg.train.split] + ([val] if val else []), cfg.train.split)
    if val is not None:
        _check_labels(datasets[val], val)
    _check_pretrained(cfg)
    if cfg.model.init_from and not Path(cfg.model.init_from).is_file():
        raise FileNotFoundError(f"model.init_from: checkpoint not found: {cfg.model.init_from}")
    skipped: list[str] = []
    resumed = _resolve_resume(work_dir, resume, skipped)
    notes += [("warning", f"--resume auto: {message}") for message in skipped]
    if resumed is not None:
        notes.append(("info", f"--resume: continuing from {resumed[0]}"))
    meta = _meta_state(cfg)
    _check_resume(cfg, resumed, meta)
    weights = sum(v.numel() * v.element_size() for v in meta.values())
    check_writable(work_dir, need_bytes=2 * weights)  # model + momentum: the least a checkpoint holds
    return datasets, resumed, notes + _clamp_workers(cfg)


def _finish(run: _Run, finished: bool, logger: RunLogger) -> dict:
    """Log the end of the run, draw its curves (rank 0) and return the summary."""
    s, stop = run.state, run.parts.stop
    if finished:
        top1 = (f"last top1 {s.last_top1:.2f}, best top1 {s.best_top1:.2f} (epoch {s.best_epoch})"
                if s.best_epoch > 0 else "no validation")
        logger.info(f"training done: {top1}; checkpoints in {run.work_dir}")
    if logger.is_main and (finished or stop.signum):
        _draw_curves(run.work_dir, logger)
    signum = 0 if finished else stop.signum
    return {"work_dir": str(run.work_dir), "rank": run.parts.ctx.rank, "finished": finished, "epoch": s.epoch,
            "global_step": s.global_step, "best_top1": s.best_top1, "best_epoch": s.best_epoch,
            "last_top1": s.last_top1, "stopped_by": signal_name(signum) if signum else None,
            "exit_code": 128 + signum if signum else 0}


def _draw_curves(work_dir: Path, logger: RunLogger) -> None:
    from rsanet.plots import PlotUnavailable, plot_training_curves
    try:
        path = plot_training_curves(work_dir / "metrics.jsonl", work_dir / "curves.png", title=str(work_dir))
        logger.info(f"training curves: {path}")
    except PlotUnavailable as e:
        logger.info(f"training curves not drawn: {e}, then `python tools/plot_curves.py {work_dir}`")
    except (OSError, ValueError) as e:
        logger.warning(f"training curves not drawn: {e}")


def run_training(cfg: Config, work_dir: str | os.PathLike | None = None, resume: Optional[str] = None,
                 stop_after: Optional[int] = None) -> dict:
    """Train ``cfg`` (single process, or one rank of a torchrun job) and return a summary dict.

    ``resume``: None (the work dir must hold no checkpoint), ``"auto"`` (continue from ``last.pth``, or the
    newest readable epoch checkpoint, or start fresh when there is none) or a checkpoint path.
    ``stop_after``: stop, as if killed, after that many optimizer steps in total (tests of crash recovery).
    SIGTERM / SIGINT stop the run cleanly after the current step (``last.pth`` written); the summary's
    ``stopped_by`` names the signal and ``exit_code`` is ``128 + signal`` (0 otherwise).
    """
    work_dir = Path(work_dir or cfg.runtime.work_dir)
    cfg = copy.deepcopy(cfg)
    cfg.runtime.work_dir = str(work_dir)
    datasets, resumed, notes = _checks_before_start(cfg, work_dir, resume)
    configure_determinism(cfg.runtime.deterministic, cfg.train.tf32)
    ctx = init_distributed(cfg.runtime.device, cfg.runtime.dist_backend, cfg.runtime.dist_timeout_minutes)
    logger = stop = None
    try:
        logger = RunLogger(work_dir, ctx.rank, cfg.runtime.tensorboard)
        _agree_on_resume(work_dir, resumed)
        _log_notes(logger, notes)
        stop = StopRequest(ctx.distributed).install()
        run, rng = _setup(cfg, ctx, work_dir, datasets, resumed, logger)
        run.parts.stop = stop
        del resumed  # the loaded checkpoint is in the model and optimizer now; free its CPU copy
        return _finish(run, _epoch_loop(run, rng, stop_after), logger)
    except Exception as e:
        if logger is not None:
            logger.error(f"{type(e).__name__}: {e}")
        raise
    finally:
        if stop is not None:
            stop.restore()
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


def _checkpoint_step(checkpoint: Path) -> int:
    """The optimizer step a training checkpoint was saved at (0 for a bare state dict), read memory-mapped."""
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True, mmap=True)
        return int(state.get("global_step", 0)) if isinstance(state, dict) else 0
    except Exception:
        return 0


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def run_test(cfg: Config, checkpoint: str | os.PathLike, work_dir: str | os.PathLike | None = None) -> dict:
    """Multi-view test of ``checkpoint`` on ``test.split``; returns the metrics and writes to ``work_dir``
    (default: the checkpoint's folder) ``test_metrics.json``, ``scores.npz`` (when ``test.save_scores``),
    the per-class report ``per_class.json`` and ``confusion_matrix.png`` (labelled splits), ``test.log`` and,
    with ``runtime.tensorboard``, the metrics as TensorBoard scalars ``test/*`` at the checkpoint's step."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"checkpoint not found: {checkpoint}")
    work_dir = Path(work_dir) if work_dir else checkpoint.parent
    cfg = copy.deepcopy(cfg)
    cfg.model.pretrained = None  # every weight comes from the checkpoint
    datasets, notes = _prepare_data(cfg, [cfg.test.split])
    dataset = datasets[cfg.test.split]
    check_writable(work_dir, what="output folder")
    notes += _clamp_workers(cfg)
    configure_determinism(cfg.runtime.deterministic, cfg.train.tf32)
    ctx = init_distributed(cfg.runtime.device, cfg.runtime.dist_backend, cfg.runtime.dist_timeout_minutes)
    logger = RunLogger(work_dir, ctx.rank, tensorboard=cfg.runtime.tensorboard, log_name="test.log", jsonl=False)
    try:
        _log_notes(logger, notes)
        net = _load_for_test(cfg, ctx, checkpoint, logger)
        result = evaluate(net, build_eval_loader(dataset, cfg, ctx), dataset, cfg, ctx, split=cfg.test.split)
        if ctx.is_main:
            _write_test_outputs(result, cfg, checkpoint, work_dir, dataset, logger)
        logger.info(f"{checkpoint} on `{cfg.test.split}` ({_plural(cfg.test.clips, 'clip')} x "
                    f"{_plural(cfg.test.crops, 'crop')}): {format_metrics(result.metrics)}")
        return result.metrics
    finally:
        logger.close()
        destroy_distributed()


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise storage_error(path, e) from None


def _write_test_outputs(result: EvalResult, cfg: Config, checkpoint: Path, work_dir: Path, dataset,
                        logger: RunLogger) -> None:
    from rsanet.plots import draw_confusion_matrix
    metrics = dict(result.metrics, split=cfg.test.split, clips=cfg.test.clips, crops=cfg.test.crops,
                   checkpoint=str(checkpoint))
    classes = getattr(dataset, "classes", None)
    if cfg.test.save_scores:
        path = save_scores(work_dir / "scores.npz", result.video_ids, result.labels, result.scores, result.views,
                           classes, result.logits)
        metrics["scores"] = str(path)
    if metrics["num_labelled"]:
        report = per_class_report(result.scores, result.labels, classes)
        _write_json(work_dir / "per_class.json", dict(report, split=cfg.test.split, checkpoint=str(checkpoint)))
        draw_confusion_matrix(report["confusion_matrix"], work_dir / "confusion_matrix.png", classes,
                              title=f"{checkpoint.name} on {cfg.test.split}: rows true, columns predicted")
        metrics["per_class"] = str(work_dir / "per_class.json")
        metrics["confusion_matrix"] = str(work_dir / "confusion_matrix.png")
    _write_json(work_dir / "test_metrics.json", metrics)
    logger.scalars("test", _checkpoint_step(checkpoint), top1=metrics["top1"], top5=metrics["top5"],
                   mean_class_accuracy=metrics["mean_class_accuracy"])
