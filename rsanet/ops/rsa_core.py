"""The aggregation core of RSA as one autograd function: normalized q, k, v -> output y (Eqs. 7-12).

q is position-major (B, N, L, C_Q); k and v are clips (B, C_Q, T, H, W) in the layout their window convs
read (channels-last = position-major, or standard; see :mod:`rsanet.ops.rsa_qkv`); the conv outputs and
every other activation are position-major, (B, N, ...). The forward runs the factored order of Eq. 12,
query side first:

    A  = K (*) r(H1)            key window conv, (B, N, C_Q, D)                        (Eq. 10)
    Ap = A + P1^T               relational + basic kernel factor                       (Eq. 12)
    u  = q Ap                   latent kernel, (B, N, L, D)
    [Bv | E] = V^T [H2 | G]     ONE value window conv, (B, N, C_Q, D + C_Q)             (Eqs. 7, 12)
    w  = u Bv^T                 (B, N, L, C_Q)
    y  = w (I + E)              (B, N, L, C_Q); y = w E without I, y = w without G     (Eq. 8)

The backward is written out, so that autograd keeps only what it needs:

    gE = w^T gy,  gw = gy (I + E)^T,  gBv = gw^T u,  gu = gw Bv,  gAp = q^T gu,  gq = gu Ap^T,
    gP1 = (sum_n gAp)^T,  gI = sum_n gE,  then the backward of the two window convs.

What is saved is the memory mode (``MEMORY_MODES``):

* ``"save"`` (default): q, k, v (the normalization's outputs, kept by it anyway), Ap (C_Q x D per
  position) and u (L x D); backward re-runs the value window conv (2/3 of the window-conv forward work)
  and the matmul for w. Keeping [Bv | I + E] as well would save that work but cost twice Ap's memory:
  RSANet-R50 would keep 1.27x TSN-R50's activations instead of 1.13x (``tools/benchmark.py memory``).
* ``"recompute"``: q, k, v only; backward re-runs both window convs and the matmuls for u and w first.

Terms missing from the layer (Table 4a: basic- or relational-only kernel or context) drop their factors.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from rsanet.ops.channelwise_conv import channelwise_window_conv, window_conv_backward, window_conv_forward

__all__ = ["rsa_core", "MEMORY_MODES"]

MEMORY_MODES = ("save", "recompute")


# ------------------------------------------------------------------------------------------------
# Filters of the two window convs and their gradients
# ------------------------------------------------------------------------------------------------
def key_filters(H1: torch.Tensor, cq: int, kernel_size) -> torch.Tensor:
    """H1 (M, G, D) -> (C_Q*D, 1, t, h, w): key channel c uses the D filters of its group c // (C_Q/G)."""
    m, g, d = H1.shape
    # (M, G, D) = (M, G*D) -> (G*D, M) as one 2D transposed copy (PyTorch's blocked transposition, 1.2-3.5x
    # faster than the permuted copy; a strided view instead would be copied by every conv call)
    h = H1.new_empty(g * d, m).copy_(H1.reshape(m, g * d).t())
    if cq != g:  # (G*D, M) -> (G, C_Q/G, D, M) (a broadcast view) -> (C_Q*D, M): a copy
        h = h.view(g, 1, d, m).expand(g, cq // g, d, m).reshape(cq * d, m)
    return h.view(cq * d, 1, *kernel_size)


def _key_filter_grad(grad: torch.Tensor, groups: int, cq: int) -> torch.Tensor:
    """(C_Q*D, 1, t, h, w) -> (G, C_Q/G, D, M) -> sum over a group's channels -> (G*D, M) -> (M, G, D),
    contiguous (as H1 itself, so that autograd keeps it without copying it again)."""
    d = grad.shape[0] // cq
    m = grad[0].numel()
    g = grad.reshape(cq * d, m) if cq == groups else grad.reshape(groups, cq // groups, d, m).sum(1)
    # (G*D, M) -> (M, G*D) as one 2D transposed copy (see key_filters) -> (M, G, D)
    return g.new_empty(m, groups * d).copy_(g.reshape(groups * d, m).t()).view(m, groups, d)


def value_filters(H2: torch.Tensor, G: torch.Tensor | None, kernel_size) -> torch.Tensor:
    """[H2 | G] (M, F) -> (F, 1, t, h, w): filters shared by every value channel."""
    filters = H2 if G is None else torch.cat([H2, G], dim=1)  # (M, D [+ C_Q])
    return filters.t().reshape(filters.shape[1], 1, *kernel_size)  # (M, F) -> (F, M) -> (F, 1, t, h, w)


def _value_bias(I: torch.Tensor | None, d: int) -> torch.Tensor | None:
    """Conv bias adding I to E: output channel c'*F + f gets 0 for f < D (Bv) and I[c', f - D] (E)."""
    if I is None:
        return None
    return torch.cat([I.new_zeros(I.shape[0], d), I], dim=1).reshape(-1)  # (C_Q, D + C_Q) -> (C_Q*F,)


# ------------------------------------------------------------------------------------------------
# Window convs on position-major activations
# ------------------------------------------------------------------------------------------------
def _as_clip(z: torch.Tensor, thw) -> torch.Tensor:
    """Position-major (B, N, C) -> (B, C, T, H, W), a channels-last view."""
    b, n, c = z.shape
    return z.reshape(b, *thw, c).permute(0, 4, 1, 2, 3)


def _as_positions(out: torch.Tensor, c: int) -> torch.Tensor:
    """(B, C*F, T, H, W) -> (B, T, H, W, C*F) -> (B, N, C, F), densely packed for the batched matmuls (a view
    when ``out`` is channels-last, a copy otherwise)."""
    b = out.shape[0]
    return out.permute(0, 2, 3, 4, 1).reshape(b, -1, c, out.shape[1] // c).contiguous()


def _window_conv(z: torch.Tensor, filters: torch.Tensor, strategy: str, bias=None, shared=False):
    """Window conv of the clip z (B, C, T, H, W) with (C*F or F, 1, t, h, w) filters: (B, N, C, F)."""
    out = window_conv_forward(z, filters, strategy, bias=bias, shared=shared)
    return _as_positions(out, z.shape[1])


def _window_conv_backward(grad: torch.Tensor, z: torch.Tensor, filters: torch.Tensor, strategy: str,
                          need_z: bool, need_filters: bool, shared: bool = False):
    """Gradients (z (B, C, T, H, W), filters) of :func:`_window_conv` for grad (B, N, C, F)."""
    b, n, c, f = grad.shape
    g = _as_clip(grad.reshape(b, n, c * f), z.shape[2:])  # (B, N, C, F) -> (B, C*F, T, H, W)
    return window_conv_backward(g, z, filters, strategy, need_z, need_filters, shared=shared)


def _tap(tap: nn.Module, u: torch.Tensor, thw) -> torch.Tensor:
    """Show a latent kernel (B, N, L, D) to ``tap`` as (B, L, D, T, H, W); returns it position-major."""
    b, n, L, d = u.shape
    shown = tap(u.reshape(b, *thw, L, d).permute(0, 4, 5, 1, 2, 3))  # (B, T, H, W, L, D) -> (B, L, D, T, H, W)
    return shown.permute(0, 3, 4, 5, 1, 2).reshape(b, n, L, d)  # (B, L, D, T, H, W) -> (B, N, L, D)


# ------------------------------------------------------------------------------------------------
# Forward (shared by the autograd function, inference and the tap path)
# ------------------------------------------------------------------------------------------------
def _kernel_factor(q, k, P1, H1, kernel_size, strategy):
    """Ap = K (*) r(H1) + P1^T (B, N, C_Q, D) (P1 enters as the conv's bias), None without a relational kernel."""
    if H1 is None:
        return None
    cq = q.shape[-1]
    bias = None if P1 is None else P1.t().reshape(-1)  # bias[c*D + d] = P1[d, c]: (D, C_Q) -> (C_Q*D,)
    return _window_conv(k, key_filters(H1, cq, kernel_size), strategy, bias=bias)


def _latent(q, ap, P1):
    """u = q Ap (B, N, L, D), or q P1^T for a basic-only kernel."""
    if ap is None:
        return torch.matmul(q, P1.t())  # (B, N, L, C_Q) @ (C_Q, D) -> (B, N, L, D)
    return torch.matmul(q, ap)  # (B, N, L, C_Q) @ (B, N, C_Q, D) -> (B, N, L, D)


def _value_factors(v, H2, G, I, kernel_size, strategy):
    """vf = [Bv | I + E] (B, N, C_Q, D [+ C_Q]) from one value window conv with shared filters (I as bias)."""
    return _window_conv(v, value_filters(H2, G, kernel_size), strategy, bias=_value_bias(I, H2.shape[1]),
                        shared=True)


def _mix(u, vf, d: int, has_g: bool):
    """w = u Bv^T and y = w (I + E) (or y = w without a relational context); returns (w, y)."""
    w = torch.matmul(u, vf[..., :d].transpose(-1, -2))  # (B, N, L, D) @ (B, N, D, C_Q) -> (B, N, L, C_Q)
    if not has_g:
        return w, w
    return w, torch.matmul(w, vf[..., d:])  # (B, N, L, C_Q) @ (B, N, C_Q, C_Q) -> (B, N, L, C_Q)


def _differentiable_conv(z, filters, strategy):
    """The window conv through autograd (per-channel filters (C*F, 1, t, h, w)): (B, N, C, F)."""
    return _as_positions(channelwise_window_conv(z, filters, strategy), z.shape[1])


def _forward_with_taps(q, k, v, P1, H1, H2, G, I, kernel_size, strategy, taps):
    """The same forward, differentiable through autograd, showing u_V and u_R to the kernel taps."""
    cq, d, thw = q.shape[-1], H2.shape[1], v.shape[2:]
    u = None
    if H1 is not None:
        a = _differentiable_conv(k, key_filters(H1, cq, kernel_size), strategy)  # (B, N, C_Q, D)
        u = _tap(taps[1], torch.matmul(q, a), thw)  # u_R = q (K (*) r(H1)), (B, N, L, D)
    if P1 is not None:
        u_v = _tap(taps[0], torch.matmul(q, P1.t()), thw)  # u_V = q P1^T, (B, N, L, D)
        u = u_v if u is None else u + u_v
    shared = value_filters(H2, G, kernel_size)  # (F, 1, t, h, w) -> the same for each channel (C_Q*F, 1, ...)
    vf = _differentiable_conv(v, shared.repeat(cq, 1, 1, 1, 1), strategy)  # (B, N, C_Q, F)
    if I is not None:
        vf = torch.cat([vf[..., :d], vf[..., d:] + I], dim=-1)
    return _mix(u, vf, d, G is not None)[1]


# ------------------------------------------------------------------------------------------------
# The autograd function
# ------------------------------------------------------------------------------------------------
class _RSACore(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, P1, H1, H2, G, I, kernel_size, strategy, memory):
        ap = _kernel_factor(q, k, P1, H1, kernel_size, strategy)
        vf = _value_factors(v, H2, G, I, kernel_size, strategy)
        u = _latent(q, ap, P1)
        _, y = _mix(u, vf, H2.shape[1], G is not None)
        kept = (ap, u) if memory == "save" else (None, None)
        ctx.save_for_backward(q, k, v, P1, H1, H2, G, I, *kept)
        ctx.geometry = (tuple(kernel_size), strategy)
        return y

    @staticmethod
    def backward(ctx, gy):
        q, k, v, P1, H1, H2, G, I, ap, u = ctx.saved_tensors
        kernel_size, strategy = ctx.geometry
        need = ctx.needs_input_grad
        if u is None:  # memory mode "recompute": the key window conv and u again
            ap = _kernel_factor(q, k, P1, H1, kernel_size, strategy)
            u = _latent(q, ap, P1)  # (B, N, L, D)
        vf = _value_factors(v, H2, G, I, kernel_size, strategy)  # the value window conv again
        b, n, L, cq = q.shape
        d = H2.shape[1]
        w = torch.matmul(u, vf[..., :d].transpose(-1, -2))  # (B, N, L, D) @ (B, N, D, C_Q) -> (B, N, L, C_Q)
        gy = gy.contiguous()  # densely packed matrices for the batched matmuls (the caller's layout may differ)
        g_vf, g_i, gw = _context_grads(gy, w, vf, d, G is not None, need[7])
        gu = torch.matmul(gw, vf[..., :d])  # (B, N, L, C_Q) @ (B, N, C_Q, D) -> (B, N, L, D)
        g_vf[0] = torch.matmul(gw.transpose(-1, -2), u)  # gBv: (B, N, C_Q, L) @ (B, N, L, D) -> (B, N, C_Q, D)
        g_vf = torch.cat(g_vf, dim=-1) if len(g_vf) > 1 else g_vf[0]  # (B, N, C_Q, F)
        gv, g_filters = _window_conv_backward(g_vf, v, value_filters(H2, G, kernel_size), strategy,
                                              need[2], need[5] or need[6], shared=True)
        gH2 = gG = None
        if g_filters is not None:
            g_hg = g_filters.flatten(1).t()  # (F, 1, t, h, w) -> (F, M) -> (M, D [+ C_Q])
            gH2, gG = g_hg[:, :d], (g_hg[:, d:] if G is not None else None)
        gq, gk, gP1, gH1 = _kernel_grads(gu, q, k, ap, P1, H1, kernel_size, strategy, need)
        return gq, gk, gv, gP1, gH1, gH2, gG, g_i, None, None, None


def _context_grads(gy, w, vf, d: int, has_g: bool, need_i: bool):
    """[slot for gBv, gE], gI and gw from gy: gE = w^T gy, gw = gy (I + E)^T (gw = gy without G)."""
    if not has_g:
        return [None], None, gy
    ge = torch.matmul(w.transpose(-1, -2), gy)  # (B, N, C_Q, L) @ (B, N, L, C_Q) -> (B, N, C_Q, C_Q)
    gw = torch.matmul(gy, vf[..., d:].transpose(-1, -2))  # (B, N, L, C_Q) @ (B, N, C_Q, C_Q) -> (B, N, L, C_Q)
    g_i = ge.sum((0, 1)) if need_i else None  # (C_Q, C_Q)
    return [None, ge], g_i, gw


def _kernel_grads(gu, q, k, ap, P1, H1, kernel_size, strategy, need):
    """gq, gk, gP1, gH1 from gu (B, N, L, D)."""
    b, n, L, cq = q.shape
    if H1 is None:  # u = q P1^T
        gq = torch.matmul(gu, P1)  # (B, N, L, D) @ (D, C_Q) -> (B, N, L, C_Q)
        # (B*N*L, D)^T @ (B*N*L, C_Q) -> (D, C_Q)
        gP1 = gu.reshape(-1, gu.shape[-1]).t() @ q.reshape(-1, cq) if need[3] else None
        return gq, None, gP1, None
    gap = torch.matmul(q.transpose(-1, -2), gu)  # (B, N, C_Q, L) @ (B, N, L, D) -> (B, N, C_Q, D)
    gq = torch.matmul(gu, ap.transpose(-1, -2))  # (B, N, L, D) @ (B, N, D, C_Q) -> (B, N, L, C_Q)
    gP1 = gap.sum((0, 1)).t() if P1 is not None and need[3] else None  # (C_Q, D) -> (D, C_Q)
    gk, g_filters = _window_conv_backward(gap, k, key_filters(H1, cq, kernel_size), strategy, need[1], need[4])
    gH1 = _key_filter_grad(g_filters, H1.shape[1], cq) if g_filters is not None else None
    return gq, gk, gP1, gH1


def rsa_core(q, k, v, P1, H1, H2, G, I, kernel_size, strategy: str = "auto", memory: str = "save",
             taps=None) -> torch.Tensor:
    """y (B, N, L, C_Q) from normalized q (B, N, L, C_Q), clips k (B, C_Q, T, H, W) or None and v, and the
    factors of the layer (None where a term is absent), all of one floating dtype.

    ``taps`` (basic, relational), when given, see the latent kernels; then the plain autograd graph is used
    (a hook may change what it sees). Otherwise the hand-written backward keeps what ``memory`` says.
    """
    if memory not in MEMORY_MODES:
        raise ValueError(f"memory must be one of {list(MEMORY_MODES)}, got {memory!r}")
    tensors = (q, k, v, P1, H1, H2, G, I)
    if taps is not None:
        return _forward_with_taps(*tensors, kernel_size, strategy, taps)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors):
        return _RSACore.apply(*tensors, tuple(kernel_size), strategy, memory)
    ap = _kernel_factor(q, k, P1, H1, kernel_size, strategy)
    vf = _value_factors(v, H2, G, I, kernel_size, strategy)
    return _mix(_latent(q, ap, P1), vf, H2.shape[1], G is not None)[1]
