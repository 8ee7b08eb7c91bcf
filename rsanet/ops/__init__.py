"""Spatio-temporal feature transforms: RSA (Eqs. 5-12) and the Table 2 baselines.

Every transform maps (B, C_in, T, H, W) -> (B, C_out, T, H/stride, W/stride). ``build_transform`` builds
one from a :class:`rsanet.config.TransformConfig`; ``rsa_reference`` (literal Eq. 8) and ``paper_eq12``
(the appendix pseudo-code) evaluate an :class:`RSA` module's parameters another way, for tests and
benchmarks only.
"""
from rsanet.ops.build import build_transform
from rsanet.ops.convs import Conv2dTransform, Conv2Plus1dTransform, Conv3dTransform
from rsanet.ops.rsa import RSA
from rsanet.ops.rsa_paper import paper_eq12
from rsanet.ops.rsa_reference import rsa_reference
from rsanet.ops.self_attention import LocalSelfAttention

__all__ = ["RSA", "rsa_reference", "paper_eq12", "LocalSelfAttention", "Conv2dTransform", "Conv3dTransform",
           "Conv2Plus1dTransform", "build_transform"]
