"""(2+1)D convolution (Table 2 row 3): the table entry ``conv2plus1d`` and its layer."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from rsanet.ops.checks import OddWindow, check_channels_stride, check_odd_window
from rsanet.ops.window import check_kernel_size, spatial_downsample

__all__ = ["Conv2Plus1dTransform", "Options", "check", "build"]


class Conv2Plus1dTransform(nn.Module):
    """(2+1)D convolution W_1D o W_2D: 1 x h x w conv, BN + ReLU, then t x 1 x 1 conv, (B, C_in, T, H, W) ->
    (B, C_out, T, H/s, W/s).

    The intermediate width is C_out (this reproduces the paper's 26.8 M parameters, not R(2+1)D's width
    formula). Stride 2 averages down after the transform. No bias (a BatchNorm follows it in the block).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int] = (3, 3, 3),
                 stride: int = 1):
        super().__init__()
        check_channels_stride(in_channels, out_channels, stride)
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


# model.transform.conv2plus1d: its window (shared with the other window-only transform)
Options = OddWindow
check = check_odd_window


def build(options: OddWindow, in_channels: int, out_channels: int, stride: int = 1) -> Conv2Plus1dTransform:
    return Conv2Plus1dTransform(in_channels, out_channels, kernel_size=tuple(options.kernel_size), stride=stride)
