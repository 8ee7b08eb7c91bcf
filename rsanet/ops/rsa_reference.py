"""Literal RSA (Eqs. 5-8 in the Eq. 11 form), only to prove the efficient forward of :class:`RSA` correct.

Every position's window is unfolded explicitly (X_n in R^{M x C}) and the paper's equations are applied as
written: the kernels kappa^V = q P^T with P = H2 P1, kappa^R = corr(q, K) H1 H2^T, the contexts X^V = V and
X^R = V V^T G, and y = (kappa^V + kappa^R)(X^V I + X^R). Memory is O(B*N*M*(L + C_Q) + B*N*M^2), so use
small inputs. The projections and normalization are re-derived here from the module's weights rather than
calling its forward helpers.
"""
from __future__ import annotations

import torch

from rsanet.ops.rsa import RSA
from rsanet.ops.window import spatial_downsample, unfold_window

__all__ = ["rsa_reference"]


def _normalize(x: torch.Tensor, dim: int, module: RSA, bn) -> torch.Tensor:
    """Table 6c: L2 over channels (x / max(||x||, 1e-12), or x / sqrt(||x||^2 + l2_eps) when the module's
    l2_eps > 0), the module's BatchNorm3d, or nothing."""
    if module.norm == "l2" and getattr(module, "l2_eps", 0.0) > 0:
        return x / (x.square().sum(dim=dim, keepdim=True) + module.l2_eps).sqrt()
    if module.norm == "l2":
        return x / x.norm(dim=dim, keepdim=True).clamp_min(1e-12)
    if module.norm == "batchnorm":
        return bn(x)
    return x


def _qkv(module: RSA, x: torch.Tensor):
    """q (B, L*C_Q, T, H, W) and k, v (B, C_Q, T, H, W), each a 1x1x1 projection then the chosen norm."""
    def proj(conv, inp):  # weight (C_out, C_in, 1, 1, 1): a per-position matrix product
        # (C_out, C_in) x (B, C_in, T, H, W) -> (B, C_out, T, H, W)
        return torch.einsum("oc,bcthw->bothw", conv.weight[:, :, 0, 0, 0], inp)

    q, v = proj(module.query, x), proj(module.value, x)
    k = None if module.key is None else proj(module.key, x)
    if module.norm == "l2":
        b, _, t, h, w = q.shape
        # (B, L*C_Q, T, H, W) -> (B, L, C_Q, T, H, W): normalize each query separately
        q = _normalize(q.reshape(b, module.queries, module.head_dim, t, h, w), 2, module, None).reshape(b, -1, t, h, w)
    else:
        q = _normalize(q, 1, module, getattr(module, "norm_q", None))
    k = None if k is None else _normalize(k, 1, module, getattr(module, "norm_k", None))
    v = _normalize(v, 1, module, getattr(module, "norm_v", None))
    return q, k, v


def _kernel(module: RSA, q: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """kappa = kappa^V + kappa^R (present terms) for q (B, N, L, C_Q) and keys (B, N, M, C_Q): (B, N, L, M)."""
    b, n, L, cq = q.shape
    m, g = module.window, module.groups
    kappa = torch.zeros(b, n, L, m, dtype=q.dtype, device=q.device)
    if module.has("kernel", "basic"):
        # P = H2 P1, (M, D) @ (D, C_Q) -> (M, C_Q); undecomposed (H2 = I), P1 is P
        p = module.P1 if module.H2 is None else module.H2 @ module.P1
        kappa = kappa + torch.einsum("bnlc,mc->bnlm", q, p)  # kappa^V = q P^T, (B, N, L, M)
    if module.has("kernel", "relational"):
        # Hadamard product of the query with every key (Eq. 6): (B, N, L, M, C_Q)
        hadamard = q[:, :, :, None, :] * keys[:, :, None, :, :]
        # sum within each of the G channel groups: (B, N, L, M, G, C_Q/G) -> (B, N, L, M, G)
        corr = hadamard.reshape(b, n, L, m, g, cq // g).sum(-1)
        h = module.H1.reshape(m * g, -1)  # (M, G, D) -> (M*G, D): H itself when undecomposed (D = M, H2 = I)
        if module.H2 is not None:
            h = h @ module.H2.t()  # H = H1 H2^T, (M*G, D) @ (D, M) -> (M*G, M)
        # vec(corr) H (Eqs. 5, 6): (B, N, L, M, G) -> (B, N, L, M*G), then @ (M*G, M) -> (B, N, L, M)
        kappa = kappa + corr.reshape(b, n, L, m * g) @ h
    return kappa


def _context(module: RSA, values: torch.Tensor) -> torch.Tensor:
    """X^V I + X^R (present terms) for values (B, N, M, C_Q): (B, N, M, C_Q)."""
    context = torch.zeros_like(values)
    if module.has("context", "basic"):
        context = context + (values if module.I is None else values @ module.I)  # X^V (times I with both)
    if module.has("context", "relational"):
        self_corr = values @ values.transpose(-1, -2)  # X^V X^V^T, (B, N, M, M)
        context = context + self_corr @ module.G  # X^R = X^V X^V^T G (Eq. 7), (B, N, M, C_Q)
    return context


def _check(module: RSA, x: torch.Tensor) -> None:
    if not isinstance(module, RSA):
        raise TypeError(f"rsa_reference needs an RSA module, got {type(module).__name__}")
    if x.dim() != 5 or x.shape[1] != module.in_channels:
        raise ValueError(f"expected (B, {module.in_channels}, T, H, W), got {tuple(x.shape)}")


def rsa_reference(module: RSA, x: torch.Tensor) -> torch.Tensor:
    """Literal Eq. 8 with the parameters of ``module``: (B, C_in, T, H, W) -> (B, C_out, T, H/s, W/s).

    Differentiable, so gradients can be compared with the fast path too. Slow and memory-hungry by design.
    """
    _check(module, x)
    b, _, t, h, w = x.shape
    n, L, cq = t * h * w, module.queries, module.head_dim
    q, k, v = _qkv(module, x)
    # (B, L*C_Q, T, H, W) -> (B, L, C_Q, N) -> (B, N, L, C_Q)
    q = q.reshape(b, L, cq, n).permute(0, 3, 1, 2)
    # (B, C_Q, T, H, W, M) -> (B, C_Q, N, M) -> (B, N, M, C_Q): the explicit windows K_n and V_n
    keys = None if k is None else unfold_window(k, module.kernel_size).reshape(b, cq, n, -1).permute(0, 2, 3, 1)
    values = unfold_window(v, module.kernel_size).reshape(b, cq, n, -1).permute(0, 2, 3, 1)
    y = _kernel(module, q, keys) @ _context(module, values)  # Eq. 8: (B, N, L, M) @ (B, N, M, C_Q) -> (B, N, L, C_Q)
    y = y.permute(0, 2, 3, 1).reshape(b, L * cq, t, h, w)  # (B, N, L, C_Q) -> (B, C_out, T, H, W)
    return spatial_downsample(y, module.stride)
