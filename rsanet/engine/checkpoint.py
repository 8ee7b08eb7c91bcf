"""Atomic checkpoints, RNG state capture, and the choice of what ``--resume auto`` continues from.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts, so that it loads with
``torch.load(..., weights_only=True)``:

``model``, ``optimizer``, ``scheduler``, ``scaler`` (or None) state dicts; ``epoch`` (epochs completed),
``step_in_epoch`` (optimizer steps done in epoch ``epoch``; 0 at an epoch end), ``global_step``,
``steps_per_epoch``; ``run_state`` (``RunState.as_dict()``: world size, total batch, scaled LR);
``best_top1``, ``best_epoch``, ``last_top1``; ``rng`` (one entry per rank); ``config`` (``config_to_dict`` of
the resolved config); ``format`` (version of this layout: 2; format 1 stored ``world_size`` instead of
``run_state``, and a config with the derived keys ``runtime.world_size``, ``train.total_batch`` and
``train.scaled_lr``, which :func:`load_checkpoint` drops, as it renames older keys; both load).

Files in a work dir: ``last.pth`` (the newest state), ``best.pth`` (best validation top-1),
``epoch_NNN.pth`` (the last few epoch ends, hard links where the file system allows). Writes go to
``<name>.tmp`` first, are fsynced, then renamed, so a kill during a write never leaves a broken file under
a final name; ``.tmp`` files are never resumed from. A write that fails (disk full, read-only) removes its
``.tmp`` file and raises :class:`~rsanet.storage.StorageError` naming the file and the reason.
"""
from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from rsanet.config import upgrade_config_dict
from rsanet.storage import os_error_in, storage_error

__all__ = ["CHECKPOINT_FORMAT", "CheckpointError", "save_checkpoint", "load_checkpoint", "link_checkpoint",
           "find_resume_checkpoint", "epoch_checkpoints", "prune_epoch_checkpoints", "capture_rng_state",
           "restore_rng_state", "model_state_from_checkpoint"]

CHECKPOINT_FORMAT = 2
_REQUIRED = ("model", "optimizer", "scheduler", "epoch", "step_in_epoch", "global_step", "config", "rng")
_EPOCH_RE = re.compile(r"^epoch_(\d+)\.pth$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and why."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove_partial(tmp: Path) -> None:
    try:
        tmp.unlink(missing_ok=True)
    except OSError:
        pass


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """``torch.save`` to ``path.tmp``, flush + fsync, then atomically rename to ``path``.

    If anything fails (or the process is interrupted) the partial ``path.tmp`` is removed and ``path`` is left
    as it was; a full or read-only disk raises :class:`~rsanet.storage.StorageError` naming ``path``.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        _remove_partial(tmp)
        if isinstance(e, Exception) and os_error_in(e) is not None:
            raise storage_error(path, e) from None
        raise
    _fsync_dir(path.parent)
    return path


def link_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """Make ``dst`` the same file as ``src`` (a hard link, else a copy), atomically."""
    src, dst = Path(src), Path(dst)
    tmp = dst.with_name(dst.name + ".tmp")
    try:
        _remove_partial(tmp)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException as e:
        _remove_partial(tmp)
        if isinstance(e, OSError):
            raise storage_error(dst, e) from None
        raise
    return dst


def load_checkpoint(path: str | os.PathLike, require_training_state: bool = True) -> dict:
    """Load one of our checkpoints with ``weights_only=True``; raise :class:`CheckpointError` naming the file
    when it is missing, truncated, corrupt or lacks the training state. A stored config of an older version is
    updated to today's keys (``rsanet.config.upgrade_config_dict``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickle error, unsupported global...
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} does not hold a dict but a {type(state).__name__}")
    if isinstance(state.get("config"), dict):
        state["config"] = upgrade_config_dict(state["config"], f"config stored in {path}")
    if require_training_state:
        missing = [k for k in _REQUIRED if k not in state]
        if missing and isinstance(state.get("state_dict"), dict) and "best_prec1" in state:
            raise CheckpointError(f"{path} is an authors' checkpoint (KimManjin/RSA), not a training state to resume: "
                                  "fine-tune from it with model.init_from, or evaluate it with tools/test.py")
        if missing:
            raise CheckpointError(f"{path} is not an RSANet training checkpoint (missing {missing})")
    return state


def model_state_from_checkpoint(path: str | os.PathLike) -> tuple[dict, Optional[dict]]:
    """``(model state dict, stored config dict or None)`` from our checkpoint, a bare state dict or the
    authors' ``.pth.tar`` (converted; see :func:`rsanet.engine.weights.read_model_weights`)."""
    from rsanet.engine.weights import read_model_weights

    weights = read_model_weights(path)
    return weights.state, weights.config


def epoch_checkpoints(work_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """``[(epoch, path), ...]`` of the ``epoch_NNN.pth`` files in ``work_dir``, newest first."""
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in work_dir.iterdir() if (m := _EPOCH_RE.match(p.name))]
    return sorted(found, reverse=True)


def prune_epoch_checkpoints(work_dir: str | os.PathLike, keep: int) -> None:
    """Delete all but the ``keep`` newest ``epoch_NNN.pth`` files."""
    for _, p in epoch_checkpoints(work_dir)[max(keep, 0):]:
        p.unlink(missing_ok=True)


def find_resume_checkpoint(work_dir: str | os.PathLike, warn=None) -> Optional[tuple[Path, dict]]:
    """What ``--resume auto`` continues from: ``(path, loaded state)`` or None when there is nothing.

    ``last.pth`` first; if it cannot be read (e.g. truncated), the newest readable ``epoch_NNN.pth``.
    ``.tmp`` files are never considered. Raises :class:`CheckpointError` when checkpoints exist but none
    can be read. ``warn(msg)`` is told about every file skipped.
    """
    work_dir = Path(work_dir)
    candidates = [work_dir / "last.pth"] if (work_dir / "last.pth").is_file() else []
    candidates += [p for _, p in epoch_checkpoints(work_dir)]
    errors = []
    for path in candidates:
        try:
            return path, load_checkpoint(path)
        except CheckpointError as e:
            errors.append(str(e))
            if warn is not None:
                warn(f"skipping unusable checkpoint: {e}")
    if errors:
        raise CheckpointError(f"no usable checkpoint in {work_dir}; tried: " + " | ".join(errors))
    return None


# ------------------------------------------------------------------------------------------------
# RNG states as plain tensors/lists (weights_only-loadable).
# ------------------------------------------------------------------------------------------------
def capture_rng_state() -> dict:
    """Python, NumPy, torch (and CUDA) generator states of this process."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(internal), gauss],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]),
                  int(np_state[3]), float(np_state[4])],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
