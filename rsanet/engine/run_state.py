"""What a run derives from its config and its job: the world size, the batch of one optimizer step and the
learning rate scaled to it. Computed once per run (:meth:`RunState.of`), logged, written beside the config
(``work_dir/run_state.json``) and stored in every checkpoint (``run_state``); the config itself holds only
what the user chose, so that the same config means the same experiment on 1 or 64 GPUs.

``batch_size x accumulate x world_size`` is computed here and nowhere else.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path

from rsanet.config import Config
from rsanet.storage import storage_error

__all__ = ["RunState"]


@dataclass(frozen=True)
class RunState:
    """The values of one run that follow from the config and the number of processes."""

    world_size: int  # processes in the job (torchrun's WORLD_SIZE; 1 without torchrun)
    batch_size: int  # clips per process per forward pass (train.batch_size)
    accumulate: int  # forward passes per optimizer step (train.accumulate)
    clips_per_process: int  # clips one process uses per optimizer step: batch_size x accumulate
    total_batch: int  # clips per optimizer step over all processes: clips_per_process x world_size
    lr: float  # train.lr, the learning rate for train.lr_reference_batch clips
    lr_reference_batch: int  # train.lr_reference_batch
    scaled_lr: float  # the learning rate of this run: lr x total_batch / lr_reference_batch (linear scaling)

    @classmethod
    def of(cls, cfg: Config, world_size: int) -> "RunState":
        """The run state of ``cfg`` on ``world_size`` processes."""
        if world_size < 1:
            raise ValueError(f"world size must be positive, got {world_size}")
        tr = cfg.train
        per_process = tr.batch_size * tr.accumulate
        total = per_process * world_size
        return cls(world_size, tr.batch_size, tr.accumulate, per_process, total, tr.lr, tr.lr_reference_batch,
                   tr.lr * total / tr.lr_reference_batch)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def describe(self) -> str:
        """One log line: the total batch and the learning rate, with how they were computed."""
        return (f"total batch {self.total_batch} = {self.batch_size} x {self.world_size} x {self.accumulate} "
                f"(train.batch_size x processes x train.accumulate); lr {self.scaled_lr:g} (= train.lr {self.lr:g} "
                f"x {self.total_batch}/{self.lr_reference_batch})")

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``run_state.json`` atomically (a full or read-only disk raises a StorageError naming it)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(self.as_dict(), indent=2) + "\n")
            os.replace(tmp, path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise storage_error(path, e) from None
        return path
