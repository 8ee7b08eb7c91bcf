"""The convolutional transforms of Table 2: 2D (the TSN baseline), 3D and (2+1)D convolution.

All map (B, C_in, T, H, W) -> (B, C_out, T, H/stride, W/stride) and have no bias (a BatchNorm follows them
inside the residual block).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from rsanet.ops.window import check_kernel_size, spatial_downsample

__all__ = ["Conv2dTransform", "Conv3dTransform", "Conv2Plus1dTransform"]


def _check_channels_stride(in_channels: int, out_channels: int, stride: int) -> None:
    for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("stride", stride)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


class Conv2dTransform(nn.Module):
    """2D convolution W_2D applied to every frame independently (TSN, Table 2 row 1).

    A 1 x h x w conv3d (3 x 3 by default, the ResNet bottleneck conv), with the stride applied by the
    conv itself as in torchvision's ResNet, so ``conv.weight[:, :, 0]`` is exactly a 2D conv weight.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int] = (3, 3),
                 stride: int = 1):
        super().__init__()
        _check_channels_stride(in_channels, out_channels, stride)
        if isinstance(kernel_size, int) and not isinstance(kernel_size, bool):
            kernel_size = (kernel_size, kernel_size)
        _, kh, kw = check_kernel_size((1, *tuple(kernel_size)), "kernel_size (h, w)", odd=True)
        self.conv = nn.Conv3d(in_channels, out_channels, (1, kh, kw), stride=(1, stride, stride),
                              padding=(0, kh // 2, kw // 2), bias=False)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Conv3dTransform(nn.Module):
    """3D convolution W_3D over a t x h x w window (Table 2 row 2); stride 2 averages down afterwards."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int] = (3, 3, 3),
                 stride: int = 1):
        super().__init__()
        _check_channels_stride(in_channels, out_channels, stride)
        ks = check_kernel_size(kernel_size, odd=True)
        self.stride = stride
        self.conv = nn.Conv3d(in_channels, out_channels, ks, padding=tuple(k // 2 for k in ks), bias=False)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return spatial_downsample(self.conv(x), self.stride)


class Conv2Plus1dTransform(nn.Module):
    """(2+1)D convolution W_1D o W_2D (Table 2 row 3): 1 x h x w conv, BN + ReLU, then t x 1 x 1 conv.

    The intermediate width is C_out (this reproduces the paper's 26.8 M parameters, not R(2+1)D's width
    formula). Stride 2 averages down after the transform.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int] = (3, 3, 3),
                 stride: int = 1):
        super().__init__()
        _check_channels_stride(in_channels, out_channels, stride)
        kt, kh, kw = check_kernel_size(kernel_size, odd=True)
        self.stride = stride
        self.spatial = nn.Conv3d(in_channels, out_channels, (1, kh, kw), padding=(0, kh // 2, kw // 2), bias=False)
        self.bn = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.temporal = nn.Conv3d(out_channels, out_channels, (kt, 1, 1), padding=(kt // 2, 0, 0), bias=False)
        for conv in (self.spatial, self.temporal):
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return spatial_downsample(self.temporal(self.relu(self.bn(self.spatial(x)))), self.stride)
