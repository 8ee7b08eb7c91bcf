"""3D convolution over the RSA window (Table 2 row 2): the table entry ``conv3d`` and its layer."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from rsanet.ops.checks import OddWindow, check_channels_stride, check_odd_window
from rsanet.ops.window import check_kernel_size, spatial_downsample

__all__ = ["Conv3dTransform", "Options", "check", "build"]


class Conv3dTransform(nn.Module):
    """3D convolution W_3D over a t x h x w window, (B, C_in, T, H, W) -> (B, C_out, T, H/s, W/s); stride 2
    averages down afterwards. No bias (a BatchNorm follows it inside the residual block)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int] = (3, 3, 3),
                 stride: int = 1):
        super().__init__()
        check_channels_stride(in_channels, out_channels, stride)
        ks = check_kernel_size(kernel_size, odd=True)
        self.stride = stride
        self.conv = nn.Conv3d(in_channels, out_channels, ks, padding=tuple(k // 2 for k in ks), bias=False)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return spatial_downsample(self.conv(x), self.stride)


# model.transform.conv3d: its window (shared with the other window-only transform)
Options = OddWindow
check = check_odd_window


def build(options: OddWindow, in_channels: int, out_channels: int, stride: int = 1) -> Conv3dTransform:
    return Conv3dTransform(in_channels, out_channels, kernel_size=tuple(options.kernel_size), stride=stride)
