"""What every backbone shares: time folded into the batch around the transforms, per-clip stochastic depth.

All 2D layers run on frames, with time folded into the batch: ``(B*T, C, H, W)``. A transform placed in a
slot of the backbone (a module name such as ``layer1.2.conv2``) sees the clip as ``(B, C, T, H, W)``;
:func:`run_slot` converts between the two layouts around it as views, so the frames' memory format (standard
or channels-last) flows through unchanged.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["unfold_time", "fold_time", "frame_memory_format", "run_slot", "StochasticDepth",
           "survival_probabilities"]


def unfold_time(x: torch.Tensor, t: int) -> torch.Tensor:
    """``(B*T, C, H, W)`` frames -> ``(B, C, T, H, W)`` clips, a view (no copy).

    Channels-last frames give a channels-last-3D clip; standard frames give a clip whose frames are
    channel-first blocks (each transform reads that without a copy or makes the copy it needs).
    """
    bt, c, h, w = x.shape
    if bt % t:
        raise ValueError(f"a batch of {bt} frames does not split into clips of {t} frames")
    # (B*T, C, H, W) -> (B, T, C, H, W) -> (B, C, T, H, W)
    return x.reshape(bt // t, t, c, h, w).transpose(1, 2)


def fold_time(x: torch.Tensor) -> torch.Tensor:
    """``(B, C, T, H, W)`` clips -> ``(B*T, C, H, W)`` frames (a view for channels-last-3D or frame-major clips)."""
    b, c, t, h, w = x.shape
    # (B, C, T, H, W) -> (B, T, C, H, W) -> (B*T, C, H, W)
    return x.transpose(1, 2).reshape(b * t, c, h, w)


def frame_memory_format(x: torch.Tensor) -> torch.memory_format:
    """The memory format a ``(B*T, C, H, W)`` tensor flows in: channels-last or the standard layout."""
    cl = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if cl else torch.contiguous_format


def run_slot(net: nn.Module, module: nn.Module, x: torch.Tensor, t: int) -> torch.Tensor:
    """Apply the module of a slot to frames ``(B*T, C, H, W)``: a 2D conv directly, a transform (anything else)
    on the unfolded clips.

    The result keeps the memory format of ``x`` (one layout flows through the network; RSA returns
    channels-last clips, which stay views in a channels-last network and are copied once otherwise). With
    ``net.checkpoint_transforms`` (``model.checkpoint_rsa``) only the transform is recomputed in backward: no
    BatchNorm runs twice, so running statistics and SyncBatchNorm collectives are not repeated.
    """
    if isinstance(module, nn.Conv2d):
        return module(x)
    clip = unfold_time(x, t)
    if getattr(net, "checkpoint_transforms", False) and module.training and torch.is_grad_enabled():
        out = checkpoint(module, clip, use_reentrant=False)
    else:
        out = module(clip)
    return fold_time(out).contiguous(memory_format=frame_memory_format(x))


def survival_probabilities(num_blocks: int, stochastic_depth: float) -> list[float]:
    """Linear decay over all blocks of the network: 1 for the first block, ``1 - stochastic_depth`` last."""
    if num_blocks == 1:
        return [1.0]
    return [1.0 - stochastic_depth * i / (num_blocks - 1) for i in range(num_blocks)]


class StochasticDepth(nn.Module):
    """Drops a residual branch for whole clips with probability ``1 - survival`` (training only).

    One Bernoulli draw per clip is shared by its ``T`` frames; kept branches are scaled by ``1 / survival``
    so that the expectation equals the eval-mode output (torchvision's ``stochastic_depth`` "row" mode,
    but per clip instead of per frame). In eval mode the branch passes unchanged.
    """

    def __init__(self, survival: float = 1.0) -> None:
        super().__init__()
        if not 0.0 < survival <= 1.0:
            raise ValueError(f"survival probability must be in (0, 1], got {survival}")
        self.survival = survival

    def forward(self, branch: torch.Tensor, t: int) -> torch.Tensor:
        if not self.training or self.survival >= 1.0:
            return branch
        clips = branch.shape[0] // t
        keep = torch.empty(clips, 1, 1, 1, dtype=branch.dtype, device=branch.device)
        keep.bernoulli_(self.survival).div_(self.survival)
        # (B, 1, 1, 1) -> (B*T, 1, 1, 1): the same decision for every frame of a clip
        return branch * keep.repeat_interleave(t, dim=0)

    def extra_repr(self) -> str:
        return f"survival={self.survival:.4f}"
