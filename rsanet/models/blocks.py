"""Residual blocks of the TSN-ResNet: per-clip stochastic depth and a spatial conv that may be a
spatio-temporal transform.

All 2D layers run on frames, with time folded into the batch: ``(B*T, C, H, W)``. The block's spatial conv
``conv2`` is either torchvision's 3x3 ``nn.Conv2d`` or a transform from :mod:`rsanet.ops` that sees the clip
as ``(B, C, T, H, W)``; :func:`unfold_time` and :func:`fold_time` convert between the two layouts around it
as views, so the frames' memory format (standard or channels-last) flows through unchanged.
Module names follow torchvision (``conv1``, ``bn1``, ``conv2``, ..., ``downsample.0``) so that torchvision
state dicts load one to one.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


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


class _Block(nn.Module):
    """Shared logic: ``relu(shortcut(x) + drop(branch(x)))`` with an optional spatio-temporal ``conv2``."""

    expansion = 1
    conv2: nn.Module
    downsample: Optional[nn.Module]

    def _finish_init(self, temporal: bool, survival: float) -> None:
        self.temporal = temporal  # True when conv2 is an rsanet.ops transform working on (B, C, T, H, W)
        self.checkpoint_transform = False  # recompute conv2 (a transform) in backward; set by the model
        self.drop_path = StochasticDepth(survival)

    def spatial(self, x: torch.Tensor, t: int) -> torch.Tensor:
        """Apply ``conv2`` to frames ``(B*T, C, H, W)``, unfolding time around a transform.

        The result keeps the memory format of ``x`` (one layout flows through the network; RSA returns
        channels-last clips, which stay views in a channels-last network and are copied once otherwise).
        With ``checkpoint_transform`` (``model.checkpoint_rsa``) only the transform is recomputed in backward:
        no BatchNorm runs twice, so running statistics and SyncBatchNorm collectives are not repeated.
        """
        if not self.temporal:
            return self.conv2(x)
        clip = unfold_time(x, t)
        if self.checkpoint_transform and self.training and torch.is_grad_enabled():
            out = checkpoint(self.conv2, clip, use_reentrant=False)
        else:
            out = self.conv2(clip)
        return fold_time(out).contiguous(memory_format=frame_memory_format(x))

    def branch(self, x: torch.Tensor, t: int) -> torch.Tensor:
        raise NotImplementedError

    def shortcut(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.downsample is None else self.downsample(x)

    def forward(self, x: torch.Tensor, t: int) -> torch.Tensor:
        return self.relu(self.shortcut(x) + self.drop_path(self.branch(x, t), t))


def _downsample(in_ch: int, out_ch: int, stride: int) -> Optional[nn.Sequential]:
    if stride == 1 and in_ch == out_ch:
        return None
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))


class BasicBlock(_Block):
    """ResNet-18/34 block: 3x3 conv (carries the stride) -> 3x3 ``conv2`` (the replaceable one)."""

    expansion = 1

    def __init__(self, in_ch: int, planes: int, stride: int = 1, conv2: Optional[nn.Module] = None,
                 survival: float = 1.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv2 if conv2 is not None else nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_ch, planes, stride)
        self._finish_init(conv2 is not None, survival)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def branch(self, x: torch.Tensor, t: int) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.bn2(self.spatial(out, t))


class Bottleneck(_Block):
    """ResNet-50/101 block (v1.5, stride on the 3x3): 1x1 -> 3x3 ``conv2`` (replaceable) -> 1x1."""

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, conv2: Optional[nn.Module] = None,
                 survival: float = 1.0) -> None:
        super().__init__()
        out_ch = planes * self.expansion
        self.conv1 = nn.Conv2d(in_ch, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv2 if conv2 is not None else nn.Conv2d(planes, planes, 3, stride=stride, padding=1,
                                                               bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_ch, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_ch, out_ch, stride)
        self._finish_init(conv2 is not None, survival)

    @property
    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def branch(self, x: torch.Tensor, t: int) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.spatial(out, t)))
        return self.bn3(self.conv3(out))
