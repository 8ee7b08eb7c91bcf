"""RSA's inputs to the aggregation: the 1x1x1 projections q, k, v, their normalization (Table 6c), and the
memory layout each is handed over in.

The projections run as one product with the stacked weights and read the layer input in place, whatever
its layout: channels-last clips as (B*N, C_in) rows, standard or frame-major clips as channel-first
(P, C_in, R) matrices (P*R = B*N). The result is viewed as (B, S1, S2, parts, C_Q) with S1*S2 = N and
parts = L queries, the value and the key, and split into separate tensors:

* q (B, N, L, C_Q), position-major (the batched per-position products read it);
* v and k each in the layout its window conv reads without a copy: ``"positions"`` (B, N, C_Q), which is a
  channels-last clip, or ``"channels"`` (B, C_Q, N), a standard clip (see :mod:`rsanet.ops.channelwise_conv`).

The L2 norm (the default) is one autograd function that keeps only its outputs and the norms for backward,
in at least float32.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["project", "split_normalized", "LAYOUTS"]

LAYOUTS = ("positions", "channels")
_EPS = 1e-12  # F.normalize's default


def _mergeable(t: torch.Tensor, dims) -> bool:
    """Whether the consecutive ``dims`` of t can be flattened into one without a copy."""
    for i, j in zip(dims[:-1], dims[1:]):
        if t.shape[i] != 1 and t.shape[j] != 1 and t.stride(i) != t.shape[j] * t.stride(j):
            return False
    return True


def _rows_view(x: torch.Tensor) -> torch.Tensor | None:
    """(B, C, T, H, W) as (B*N, C) rows without a copy when x is channels-last, else None."""
    c = x.shape[1]
    pm = x.permute(0, 2, 3, 4, 1)  # (B, T, H, W, C)
    if c == 1 or pm.stride(-1) != 1 or not _mergeable(pm, (0, 1, 2, 3, 4)):
        return None
    return pm.reshape(-1, c)  # (B*N, C), a view


def _frames_view(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) as channel-first matrices (P, C, R) with P*R = B*N: (B, C, N) for a standard clip,
    (B*T, C, H*W) for the frames of a TSN backbone; a copy only when neither view exists."""
    b, c, t, h, w = x.shape
    if _mergeable(x, (2, 3, 4)):
        return x.reshape(b, c, t * h * w)  # (B, C, N), a view
    frames = x.transpose(1, 2)  # (B, T, C, H, W)
    if _mergeable(frames, (0, 1)) and _mergeable(frames, (3, 4)):
        return frames.reshape(b * t, c, h * w)  # (B*T, C, H*W), a view
    return x.reshape(b, c, t * h * w)  # a copy


def project(x: torch.Tensor, weight: torch.Tensor, cq: int) -> torch.Tensor:
    """x (B, C_in, T, H, W) times the stacked (C_qvk, C_in) weight: a (B, S1, S2, parts, C_Q) view."""
    b = x.shape[0]
    parts = weight.shape[0] // cq
    rows = _rows_view(x)
    if rows is not None:
        # (B*N, C_in) @ (C_in, C_qvk) -> (B*N, C_qvk) -> (B, 1, N, parts, C_Q)
        return torch.matmul(rows, weight.t()).view(b, 1, -1, parts, cq)
    frames = _frames_view(x)  # (P, C_in, R)
    out = F.conv1d(frames, weight[:, :, None])  # 1x1: (P, C_qvk, R)
    # (P, C_qvk, R) -> (P, R, C_qvk) -> (B, P/B, R, parts, C_Q), a view
    return out.transpose(1, 2).reshape(b, -1, out.shape[2], parts, cq)


def _part(x5: torch.Tensor, i: int, layout: str) -> torch.Tensor:
    """Part i of x5 (B, S1, S2, parts, C_Q) as (B, S1, S2, C_Q) ("positions") or (B, C_Q, S1, S2) ("channels")."""
    part = x5[:, :, :, i]
    return part if layout == "positions" else part.permute(0, 3, 1, 2)


def _empty(x5: torch.Tensor, layout: str, dtype) -> torch.Tensor:
    b, s1, s2, _, cq = x5.shape
    shape = (b, s1, s2, cq) if layout == "positions" else (b, cq, s1, s2)
    return torch.empty(shape, dtype=dtype, device=x5.device)


def _channel_dim(layout: str) -> int:
    return -1 if layout == "positions" else 1


def _normalized_parts(x5: torch.Tensor, L: int, layouts, dtype, eps: float = 0.0):
    """(q, v[, k]) normalized over C_Q in their layouts, and their norms; each written once. The norm is
    max(|x|, 1e-12) when ``eps`` is 0 (F.normalize), sqrt(|x|^2 + eps) otherwise (the authors' code: 1e-6)."""
    b, s1, s2, parts, cq = x5.shape
    q = torch.empty((b, s1, s2, L, cq), dtype=dtype, device=x5.device)
    outs = [q.copy_(x5[:, :, :, :L])] + [_empty(x5, lay, dtype).copy_(_part(x5, L + i, lay))
                                          for i, lay in enumerate(layouts)]
    dims = [-1] + [_channel_dim(lay) for lay in layouts]
    # squares summed over C_Q: fast for either layout (vector_norm is slow on the strided views)
    norms = [o.square().sum(d, keepdim=True).add_(eps).sqrt_() for o, d in zip(outs, dims)]
    for o, n in zip(outs, norms):
        o.div_(n.clamp_min(_EPS))
    return outs, norms


class _L2NormalizeSplit(torch.autograd.Function):
    """L2 normalization of every C_Q group of x5 (B, S1, S2, parts, C_Q), split into q, v[, k] (see the
    module doc). Keeps only the outputs and the norms (F.normalize keeps its input too):
    grad_x = (grad_y - y (y . grad_y) [n >= 1e-12]) / max(n, 1e-12) with n the norm (sqrt(|x|^2 + eps) for
    eps > 0, whose derivative has the same form)."""

    @staticmethod
    def forward(ctx, x5: torch.Tensor, L: int, layouts: tuple, dtype: torch.dtype, eps: float):
        outs, norms = _normalized_parts(x5, L, layouts, dtype, eps)
        ctx.save_for_backward(*outs, *norms)
        ctx.meta = (L, layouts, x5.dtype)
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads):
        L, layouts, in_dtype = ctx.meta
        saved = ctx.saved_tensors
        outs, norms = saved[:len(grads)], saved[len(grads):]
        gx = torch.empty((*outs[0].shape[:3], L + len(layouts), outs[0].shape[-1]), dtype=outs[0].dtype,
                         device=outs[0].device)  # (B, S1, S2, parts, C_Q)
        targets = [gx[:, :, :, :L]] + [_part(gx, L + i, lay) for i, lay in enumerate(layouts)]
        dims = [-1] + [_channel_dim(lay) for lay in layouts]
        for y, n, g, d, target in zip(outs, norms, grads, dims, targets):
            radial = (y * g).sum(d, keepdim=True).masked_fill_(n < _EPS, 0)
            target.copy_((g - y * radial) / n.clamp_min(_EPS))
        return gx.to(in_dtype), None, None, None, None


def split_normalized(x5: torch.Tensor, L: int, layouts, dtype: torch.dtype, l2: bool, eps: float = 0.0):
    """(q (B, N, L, C_Q), v, [k]) from the projections x5 (B, S1, S2, parts, C_Q), in ``dtype``; v and k
    as (B, N, C_Q) or (B, C_Q, N) by ``layouts``; L2-normalized over C_Q when ``l2`` (``eps``: see
    :func:`_normalized_parts`)."""
    b, s1, s2, parts, cq = x5.shape
    layouts = tuple(layouts)
    if l2 and torch.is_grad_enabled() and x5.requires_grad:
        outs = _L2NormalizeSplit.apply(x5, L, layouts, dtype, eps)
    elif l2:  # inference: the same numbers without the autograd function (TorchScript cannot save those)
        outs = _normalized_parts(x5, L, layouts, dtype, eps)[0]
    else:
        outs = [x5[:, :, :, :L].to(dtype).contiguous()] + [_part(x5, L + i, lay).to(dtype).contiguous()
                                                            for i, lay in enumerate(layouts)]
    q = outs[0].reshape(b, s1 * s2, L, cq)
    rest = [o.reshape(b, s1 * s2, cq) if lay == "positions" else o.reshape(b, cq, s1 * s2)
            for o, lay in zip(outs[1:], layouts)]
    return (q, *rest)
