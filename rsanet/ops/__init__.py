"""Spatio-temporal feature transforms, by name: RSA (Eqs. 5-12) and the Table 2 baselines.

Every transform maps (B, C_in, T, H, W) -> (B, C_out, T, H/stride, W/stride). ``TRANSFORMS[model.transform.type]``
is the module that knows one; a new transform is one module plus one line in :data:`TRANSFORMS`. The config
takes the allowed values of ``model.transform.type`` from this table, and gives every entry a section of its own
options, ``model.transform.<name>`` (strict, with a did-you-mean for each key). A module defines:

``Options``
    a dataclass of the transform's keys, with defaults and a comment on each (``model.transform.<name>.*``).
``build(options, in_channels, out_channels, stride) -> nn.Module``
    the layer that replaces a 2D conv of the backbone with those channels and spatial stride.
``check(options, key) -> str | None`` (optional)
    what is wrong with the options, naming the full key (``key`` is ``model.transform.<name>``); run when the
    config is loaded.
``init_weights(options, module)`` (optional)
    re-initialise a built layer once the whole network is initialised (RSA: ``model.transform.rsa.init``).
``REPLACES`` (optional, default True)
    False for ``conv2d``: the backbone keeps its own 2D convs, so nothing is placed anywhere.

The modules import nothing from the config, data or models, so the config reads this table without the rest
of the package. ``rsa_reference`` (literal Eq. 8) and ``paper_eq12`` (the appendix pseudo-code) evaluate an
:class:`RSA` module's parameters another way, for tests and benchmarks only.
"""
from __future__ import annotations

from torch import nn

from rsanet.ops import conv2d, conv2plus1d, conv3d, rsa, self_attention
from rsanet.ops.conv2d import Conv2dTransform
from rsanet.ops.conv2plus1d import Conv2Plus1dTransform
from rsanet.ops.conv3d import Conv3dTransform
from rsanet.ops.rsa import RSA
from rsanet.ops.rsa_paper import paper_eq12
from rsanet.ops.rsa_reference import rsa_reference
from rsanet.ops.self_attention import LocalSelfAttention

# model.transform.type -> its module.
TRANSFORMS = {
    "rsa": rsa,  # relational self-attention (Sec. 4)
    "conv2d": conv2d,  # TSN: the backbone's own 2D convs (Table 2 row 1)
    "conv3d": conv3d,  # 3D convolution over the window (Table 2 row 2)
    "conv2plus1d": conv2plus1d,  # (2+1)D convolution (Table 2 row 3)
    "self_attention": self_attention,  # local self-attention (Table 2 rows 4-7)
}

__all__ = ["TRANSFORMS", "build_transform", "replaces", "RSA", "rsa_reference", "paper_eq12", "LocalSelfAttention",
           "Conv2dTransform", "Conv3dTransform", "Conv2Plus1dTransform"]


def transform_module(name: str):
    """The module of transform ``name``; a ValueError lists the known names (the config checked them already)."""
    try:
        return TRANSFORMS[name]
    except KeyError:
        raise ValueError(f"unknown model.transform.type {name!r}; expected one of {', '.join(TRANSFORMS)}") from None


def replaces(name: str) -> bool:
    """Whether transform ``name`` replaces the backbone's convs (False for ``conv2d``)."""
    return getattr(transform_module(name), "REPLACES", True)


def build_transform(tcfg, in_channels: int, out_channels: int, stride: int = 1) -> nn.Module:
    """The layer of ``tcfg.type`` with the options of its section (``tcfg`` is a config's ``model.transform``),
    mapping (B, C_in, T, H, W) -> (B, C_out, T, H/stride, W/stride)."""
    return transform_module(tcfg.type).build(getattr(tcfg, tcfg.type), in_channels, out_channels, stride)
