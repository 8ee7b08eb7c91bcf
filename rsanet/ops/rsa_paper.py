"""A plain transcription of the paper's Eq. 12 pseudo-code (Appendix Fig. 5, ``impl == 'Eq_12'``).

Kept only as a benchmark baseline for :class:`rsanet.ops.RSA`. It follows the figure step by step, with the
multi-query L added in the obvious way: the key conv carries P1 as its bias, H2 and G are two separate
value convs (G with I as its bias), the per-position C_Q x D product ``H2_v_I_v_G`` is materialized, and
only then does the query side contract with it. Numbers equal the layer's (tests check this against
:func:`rsanet.ops.rsa_reference`); the cost differs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from rsanet.ops.rsa import RSA
from rsanet.ops.window import spatial_downsample, window_conv3d

__all__ = ["paper_eq12"]


def _qkv(module: RSA, x: torch.Tensor):
    """query (B, L, C, T, H, W), key and value (B, C, T, H, W): the module's 1x1x1 convs and norm."""
    b, _, t, h, w = x.shape
    query, value = module.query(x), module.value(x)
    key = module.key(x) if module.key is not None else None
    if module.norm == "batchnorm":
        query, value = module.norm_q(query), module.norm_v(value)
        key = module.norm_k(key) if key is not None else None
    query = query.reshape(b, module.queries, module.head_dim, t, h, w)  # (B, L*C, T, H, W) -> (B, L, C, T, H, W)
    if module.norm == "l2":
        query, value = F.normalize(query, dim=2), F.normalize(value, dim=1)
        key = F.normalize(key, dim=1) if key is not None else None
    return query, key, value


def paper_eq12(module: RSA, x: torch.Tensor) -> torch.Tensor:
    """Fig. 5 ``Eq_12`` with the parameters of ``module``: (B, C_in, T, H, W) -> (B, C_out, T, H/s, W/s)."""
    if not isinstance(module, RSA):
        raise TypeError(f"paper_eq12 needs an RSA module, got {type(module).__name__}")
    if module.H2 is None:
        raise ValueError("paper_eq12 transcribes the decomposed layer (Fig. 5); an RSA with decompose=False has no H2 "
                         "(rsanet.ops.rsa_reference evaluates it)")
    b, _, t, h, w = x.shape
    n, L, c, d, ks = t * h * w, module.queries, module.head_dim, module.latent_dim, module.kernel_size
    query, key, value = _qkv(module, x)
    query = query.reshape(b, L, c, n)  # (B, L, C, T, H, W) -> (B, L, C, N)

    # P1_k_H1 = conv1d(key, H1, group=C, kernel=M, bias=P1): (B, C*D, N) -> (B, C, D, N)
    p1 = module.P1.t().reshape(c * d) if module.P1 is not None else None  # bias[c*D + d] = P1[d, c]
    if module.H1 is not None:
        h1 = module.channel_h1().permute(1, 2, 0).reshape(c * d, 1, *ks)  # (M, C, D) -> (C*D, 1, t, h, w)
        p1_k_h1 = window_conv3d(key, h1, groups=c, bias=p1).reshape(b, c, d, n)  # (B, C*D, T, H, W) -> (B, C, D, N)
    else:
        p1_k_h1 = p1.reshape(1, c, d, 1).expand(b, c, d, n)  # bias only: (C*D,) -> (B, C, D, N)
    q_p1_k_h1 = torch.einsum("blcn,bcdn->bldn", query, p1_k_h1)  # (B, L, D, N)

    value = value.reshape(b * c, 1, t, h, w)  # [B, NC, 1] of the figure: (B, C, T, H, W) -> (B*C, 1, T, H, W)
    h2 = module.H2.t().reshape(d, 1, *ks)  # (M, D) -> (D, 1, t, h, w)
    h2_v = window_conv3d(value, h2).reshape(b, c, d, n)  # (B*C, D, T, H, W) -> (B, C, D, N)
    if module.G is not None:
        g = module.G.t().reshape(c, 1, *ks)  # (M, C) -> (C, 1, t, h, w)
        i_v_g = window_conv3d(value, g).reshape(b, c, c, n)  # (B*C, C, T, H, W) -> (B, C, C, N)
        if module.I is not None:
            i_v_g = i_v_g + module.I[None, :, :, None]  # bias=I: (B, C, C, N)
        h2_v_i_v_g = torch.einsum("bkdn,bkcn->bcdn", h2_v, i_v_g)  # (B, C, D, N)
    else:
        h2_v_i_v_g = h2_v  # basic context only
    y = torch.einsum("bldn,bcdn->blcn", q_p1_k_h1, h2_v_i_v_g)  # (B, L, C, N)
    y = y.reshape(b, L * c, t, h, w)  # (B, L, C, N) -> (B, C_out, T, H, W)
    return spatial_downsample(y, module.stride)
