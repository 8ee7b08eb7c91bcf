"""Process-group setup from torchrun's environment, and the few collectives the engine needs.

A plain ``python tools/train.py`` runs single-process without a process group; under ``torchrun``
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) one process per device joins a
group: NCCL on GPU, gloo on CPU. Every helper here also works without a process group, so the engine
has one code path for 1 and N processes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

__all__ = ["DistContext", "env_world_size", "init_distributed", "destroy_distributed", "is_distributed",
           "get_rank", "get_world_size", "is_main_process", "barrier", "all_gather_object", "broadcast_object",
           "all_reduce_sum", "all_gather_tensor", "broadcast_buffers", "resolve_device"]


@dataclass
class DistContext:
    """Where this process runs: its rank among ``world_size`` processes and its device."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    backend: str  # '' when there is no process group

    @property
    def is_main(self) -> bool:
        """True on rank 0, the only process that logs and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group with more than one process exists."""
        return self.world_size > 1


def env_world_size() -> int:
    """The number of processes torchrun will start (``WORLD_SIZE``), 1 for a plain run."""
    raw = os.environ.get("WORLD_SIZE", "1")
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"environment variable WORLD_SIZE={raw!r} is not an integer") from None
    if value < 1:
        raise ValueError(f"environment variable WORLD_SIZE={raw!r} must be >= 1")
    return value


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``runtime.device`` ('auto', 'cpu' or 'cuda') as the device of this process."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return torch.device("cpu")
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("runtime.device is 'cuda' but no CUDA device is available")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    raise ValueError(f"runtime.device must be 'auto', 'cpu' or 'cuda', got {device!r}")


def init_distributed(device: str = "auto", backend: str = "auto", timeout_minutes: int = 30) -> DistContext:
    """Join the process group described by torchrun's environment, or run alone.

    ``backend='auto'`` picks NCCL when this process uses a GPU and gloo otherwise. The collective timeout
    makes a rank whose peer died fail instead of waiting forever.
    """
    world_size = env_world_size()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world_size == 1:
        return DistContext(0, 0, 1, dev, "")
    for key in ("MASTER_ADDR", "MASTER_PORT", "RANK"):
        if key not in os.environ:
            raise RuntimeError(f"WORLD_SIZE={world_size} but {key} is not set: start multi-process runs "
                               "with torchrun (see scripts/dist_train.sh)")
    if backend == "auto":
        backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {"backend": backend, "timeout": timedelta(minutes=timeout_minutes)}
        if dev.type == "cuda":
            kwargs["device_id"] = dev
        dist.init_process_group(**kwargs)
    return DistContext(rank, local_rank, world_size, dev, backend)


def destroy_distributed() -> None:
    """Leave the process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_distributed() -> bool:
    """True inside a process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """Rank of this process (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    """Number of processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """True on rank 0."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every process (no-op when alone)."""
    if is_distributed():
        dist.barrier()


def all_gather_object(obj: Any) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (``[obj]`` when alone). For small picklable objects."""
    if not is_distributed():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: list[float] | torch.Tensor) -> torch.Tensor:
    """Element-wise sum over processes, as a float64 CPU tensor."""
    t = torch.as_tensor(values, dtype=torch.float64)
    if is_distributed():
        t = t.to(_comm_device())
        dist.all_reduce(t)
    return t.cpu()


def all_gather_tensor(t: torch.Tensor) -> torch.Tensor:
    """Concatenate equally shaped tensors of all ranks along dim 0, rank-major, on the CPU. The gather runs
    on the communication device (the GPU for NCCL), followed by a single copy to the host."""
    if not is_distributed():
        return t.detach().cpu()
    local = t.detach().to(_comm_device()).contiguous()
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, local)
    return torch.cat(parts, dim=0).cpu()  # (world * n, ...)


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (e.g. BatchNorm running statistics) to every rank."""
    if not is_distributed():
        return
    for buf in module.buffers():
        dist.broadcast(buf.data, src=src)
