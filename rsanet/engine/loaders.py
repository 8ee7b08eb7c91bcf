"""Data loaders of the engine: a resumable distributed sampler for training, a padded one for evaluation,
the host-to-device step (uint8 clips normalized on the device) and the unreadable-sample budget
(``data.max_bad_fraction``)."""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from rsanet.config import Config
from rsanet.dist import DistContext
from rsanet.engine.run_state import RunState
from rsanet.engine.stop import ignore_stop_signals

__all__ = ["ResumableDistributedSampler", "build_train_loader", "build_eval_loader", "check_bad_fraction",
           "to_device"]


class ResumableDistributedSampler(DistributedSampler):
    """A ``DistributedSampler`` that can start an epoch after its first ``skip`` samples.

    The order of an epoch depends only on ``(seed, epoch)``, so a run resumed in the middle of an epoch
    sees exactly the samples the interrupted run had not seen yet. ``skip`` applies to the next epoch
    iterated and is then reset to 0.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, shuffle: bool, seed: int,
                 drop_last: bool):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.skip = 0

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        skip, self.skip = self.skip, 0
        return iter(indices[skip:])

    def __len__(self) -> int:
        return self.num_samples - self.skip


def _loader_kwargs(cfg: Config, ctx: DistContext, persistent: bool) -> dict:
    workers = cfg.data.num_workers
    return {"num_workers": workers, "pin_memory": cfg.data.pin_memory and ctx.device.type == "cuda",
            "persistent_workers": persistent and workers > 0,
            "worker_init_fn": ignore_stop_signals if workers > 0 else None}


def build_train_loader(dataset: Dataset, cfg: Config, ctx: DistContext,
                       run: RunState) -> tuple[DataLoader, ResumableDistributedSampler]:
    """Shuffled, sharded, full batches of ``train.batch_size`` clips per process (the remainder is dropped)."""
    sampler = ResumableDistributedSampler(dataset, ctx.world_size, ctx.rank, shuffle=True,
                                          seed=cfg.runtime.seed, drop_last=True)
    if sampler.num_samples < run.clips_per_process:
        raise ValueError(f"the training split has {len(dataset)} clips: too few for one optimizer step of "
                         f"train.batch_size={run.batch_size} x train.accumulate={run.accumulate} "
                         f"clips on each of {run.world_size} processes")
    loader = DataLoader(dataset, batch_size=run.batch_size, sampler=sampler, drop_last=True,
                        **_loader_kwargs(cfg, ctx, persistent=True))
    return loader, sampler


def build_eval_loader(dataset: Dataset, cfg: Config, ctx: DistContext) -> DataLoader:
    """Every sample once, in order, sharded over processes; the sampler pads the last shard by repeating
    samples, and the evaluation drops those duplicates by sample index.

    Its workers are not persistent: between validations they would hold ``data.num_workers`` processes per
    rank, and their prefetched batches in shared memory, next to the training loader's.
    """
    sampler = ResumableDistributedSampler(dataset, ctx.world_size, ctx.rank, shuffle=False,
                                          seed=cfg.runtime.seed, drop_last=False)
    return DataLoader(dataset, batch_size=cfg.test.batch_size, sampler=sampler, drop_last=False,
                      **_loader_kwargs(cfg, ctx, persistent=False))


def check_bad_fraction(replaced: float, total: float, max_fraction: float, split: str) -> None:
    """Raise ``rsanet.data.BadDataError`` when ``replaced / total`` exceeds ``data.max_bad_fraction``."""
    from rsanet.data import check_bad_fraction as check
    check(int(replaced), int(total), max_fraction, split)


def to_device(batch: dict, device: torch.device, mean: Sequence[float],
              std: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(clip (B, C, T, H, W) float32, label (B,))`` of a collated batch on ``device``: the uint8 clips are
    copied (pinned memory: asynchronously) and then normalized there with ``data.mean``/``data.std``."""
    from rsanet.data import normalize_clip
    clip = normalize_clip(batch["clip"].to(device, non_blocking=True), mean, std)
    label = torch.as_tensor(batch["label"]).to(device, non_blocking=True)
    return clip, label
