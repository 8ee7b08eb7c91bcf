"""Build the transform named by a :class:`rsanet.config.TransformConfig` (Table 2: rsa and its baselines)."""
from __future__ import annotations

import torch.nn as nn

from rsanet.config import TransformConfig
from rsanet.ops.convs import Conv2dTransform, Conv2Plus1dTransform, Conv3dTransform
from rsanet.ops.rsa import RSA
from rsanet.ops.self_attention import LocalSelfAttention

__all__ = ["build_transform"]


def build_transform(tcfg: TransformConfig, in_channels: int, out_channels: int, stride: int = 1) -> nn.Module:
    """The module for ``tcfg.type``, mapping (B, C_in, T, H, W) -> (B, C_out, T, H/stride, W/stride).

    ``latent_dim``/``groups`` 0 mean C_Q; ``kernel_size`` is [t, h, w]. ``conv2d`` is the TSN baseline and
    always uses the bottleneck's 3 x 3 spatial kernel, whatever ``kernel_size`` says.
    """
    kind, ks = tcfg.type, tuple(tcfg.kernel_size)
    if kind == "rsa":
        return RSA(in_channels, out_channels, kernel_size=ks, queries=tcfg.queries,
                   latent_dim=tcfg.latent_dim or None, groups=tcfg.groups or None, kernel=tuple(tcfg.kernel),
                   context=tuple(tcfg.context), norm=tcfg.norm, stride=stride, l2_eps=tcfg.l2_eps, memory=tcfg.memory,
                   window_conv=tcfg.window_conv)
    if kind == "conv2d":
        return Conv2dTransform(in_channels, out_channels, kernel_size=(3, 3), stride=stride)
    if kind == "conv3d":
        return Conv3dTransform(in_channels, out_channels, kernel_size=ks, stride=stride)
    if kind == "conv2plus1d":
        return Conv2Plus1dTransform(in_channels, out_channels, kernel_size=ks, stride=stride)
    if kind == "self_attention":
        return LocalSelfAttention(in_channels, out_channels, kernel_size=ks, queries=tcfg.queries,
                                  attention=tuple(tcfg.attention), softmax=tcfg.softmax, stride=stride)
    raise ValueError(f"unknown transform type {kind!r}; choose from rsa, conv2d, conv3d, conv2plus1d, "
                     f"self_attention")
