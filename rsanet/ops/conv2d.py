"""2D convolution, TSN's spatial conv (Table 2 row 1): the table entry ``conv2d`` and its layer.

As a model's transform, ``conv2d`` is the backbone's own 3x3 convolution: nothing is replaced
(``REPLACES = False``), so the network is the plain TSN with every ImageNet weight, whatever
``model.transform.positions`` says. :class:`Conv2dTransform` is the same operation on clips, for building one
directly (``build_transform``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn

from rsanet.ops.checks import check_channels_stride
from rsanet.ops.window import check_kernel_size

__all__ = ["Conv2dTransform", "Options", "REPLACES", "build"]

REPLACES = False  # the backbone keeps its own 2D convs: positions and replace are not read


class Conv2dTransform(nn.Module):
    """2D convolution W_2D applied to every frame independently, (B, C_in, T, H, W) -> (B, C_out, T, H/s, W/s).

    A 1 x h x w conv3d (3 x 3 by default, the ResNet bottleneck conv), with the stride applied by the
    conv itself as in torchvision's ResNet, so ``conv.weight[:, :, 0]`` is exactly a 2D conv weight. No bias
    (a BatchNorm follows it inside the residual block).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int] = (3, 3),
                 stride: int = 1):
        super().__init__()
        check_channels_stride(in_channels, out_channels, stride)
        if isinstance(kernel_size, int) and not isinstance(kernel_size, bool):
            kernel_size = (kernel_size, kernel_size)
        _, kh, kw = check_kernel_size((1, *tuple(kernel_size)), "kernel_size (h, w)", odd=True)
        self.conv = nn.Conv3d(in_channels, out_channels, (1, kh, kw), stride=(1, stride, stride),
                              padding=(0, kh // 2, kw // 2), bias=False)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@dataclass
class Options:
    """``model.transform.conv2d``: no keys (TSN keeps the backbone's 3x3 convs)."""


def build(options: Options, in_channels: int, out_channels: int, stride: int = 1) -> Conv2dTransform:
    """A 3x3 :class:`Conv2dTransform` (a model never builds one: ``REPLACES`` is False)."""
    return Conv2dTransform(in_channels, out_channels, kernel_size=(3, 3), stride=stride)
