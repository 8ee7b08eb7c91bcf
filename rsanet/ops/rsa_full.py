"""RSA without the decomposition of Sec. 4.2 (Table 4b's row "D = -"): H (M*G x M) and P (M x C_Q) as they are.

The layer keeps the parameter names of the decomposed one with D = M and H2 = I (not stored): ``H1`` (M, G, M)
is H (row-major (M, G) is the paper's M*G x M matrix) and ``P1`` (M, C_Q) is P (P = H2 P1 with H2 = I). In the
order of Eqs. 10 and 12,

    kappa = q (P1^T + K (*) r(H1))     key window conv with M filters per channel, (B, N, L, M)
    y     = (kappa V) (I + V^T G)      explicit value windows V (M x C_Q per position)

which is Eq. 8 with P = P1 and H = H1: :func:`rsanet.ops.rsa_reference` evaluates it literally. The key window
conv costs N*C_Q*M^2 multiply-accumulates per layer and keeps B*N*C_Q*M values, the quadratic cost in M that
the decomposition removes; this path is plain autograd (an ablation, not an optimized operator).
"""
from __future__ import annotations

import torch
from torch import nn

from rsanet.ops.channelwise_conv import channelwise_window_conv
from rsanet.ops.rsa_core import key_filters
from rsanet.ops.window import unfold_window

__all__ = ["rsa_undecomposed"]


def _positions(out: torch.Tensor, c: int) -> torch.Tensor:
    """(B, C*F, T, H, W) -> (B, T, H, W, C*F) -> (B, N, C, F)."""
    b = out.shape[0]
    return out.permute(0, 2, 3, 4, 1).reshape(b, -1, c, out.shape[1] // c)


def _tap(tap: nn.Module | None, u: torch.Tensor, thw) -> torch.Tensor:
    """Show a kernel (B, N, L, M) to ``tap`` as (B, L, M, T, H, W); returns it position-major."""
    if tap is None:
        return u
    b, n, L, m = u.shape
    shown = tap(u.reshape(b, *thw, L, m).permute(0, 4, 5, 1, 2, 3))  # (B, T, H, W, L, M) -> (B, L, M, T, H, W)
    return shown.permute(0, 3, 4, 5, 1, 2).reshape(b, n, L, m)  # (B, L, M, T, H, W) -> (B, N, L, M)


def rsa_undecomposed(q, k, v, P1, H1, G, I, kernel_size, strategy: str = "auto", taps=None) -> torch.Tensor:
    """y (B, N, L, C_Q) from normalized q (B, N, L, C_Q), clips k (B, C_Q, T, H, W) (None without a relational
    kernel) and v, and the factors (None where a term is absent); ``taps`` (basic, relational) see the two
    kernels over the window, (B, L, M, T, H, W)."""
    b, n, L, cq = q.shape
    thw = v.shape[2:]
    basic, relational = (taps if taps is not None else (None, None))
    kappa, a = None, None
    if H1 is not None:
        # (B, C_Q*M, T, H, W) -> (B, N, C_Q, M): K (*) r(H1) with the M filters of each key channel's group
        a = _positions(channelwise_window_conv(k, key_filters(H1, cq, kernel_size), strategy), cq)
    if a is not None and P1 is not None and taps is None:
        kappa = torch.matmul(q, a + P1.t())  # q (P1^T + K (*) r(H1)): (B, N, L, C_Q) @ (B, N, C_Q, M)
    else:
        if a is not None:
            kappa = _tap(relational, torch.matmul(q, a), thw)  # kappa^R: (B, N, L, C_Q) @ (B, N, C_Q, M)
        if P1 is not None:
            kappa_v = _tap(basic, torch.matmul(q, P1.t()), thw)  # kappa^V = q P^T: (B, N, L, C_Q) @ (C_Q, M)
            kappa = kappa_v if kappa is None else kappa + kappa_v
    # (B, C_Q, T, H, W, M) -> (B, N, M, C_Q): the explicit value windows
    windows = unfold_window(v, kernel_size).permute(0, 2, 3, 4, 5, 1).reshape(b, n, -1, cq)
    w = torch.matmul(kappa, windows)  # kappa X^V: (B, N, L, M) @ (B, N, M, C_Q) -> (B, N, L, C_Q)
    if G is None:
        return w  # basic context only
    context = torch.matmul(windows.transpose(-1, -2), G)  # V^T G: (B, N, C_Q, M) @ (M, C_Q) -> (B, N, C_Q, C_Q)
    if I is not None:
        context = context + I  # I + V^T G
    return torch.matmul(w, context)  # (B, N, L, C_Q) @ (B, N, C_Q, C_Q) -> (B, N, L, C_Q)
