"""Local spatio-temporal self-attention over the RSA window, the Table 2 baselines (Sec. 3, Eq. 2).

For position n with window offsets m, L queries q_l (C_Q channels each) and one key K and value V (M x C_Q)
shared by the queries (multi-query, like RSA):

    y_l = a_l V,   a_l = sigma(q_l K^T + q_l P^T)   (or one of the two terms, or the softmax-free q_l P^T)

with a learnable position embedding P in R^{M x C_Q}. With the softmax, logits are scaled by 1/sqrt(C_Q)
and window offsets outside the clip are masked out, so the weights over the valid window sum to one.
Without it (the lambda/involution-like kernel q P^T), the window reads zeros outside the clip, as RSA does.
The key and value windows are unfolded explicitly (memory O(B*N*M*C_Q)), as in stand-alone
self-attention; this is a baseline, not an optimized operator.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Literal, Optional, Sequence

import torch
import torch.nn as nn

from rsanet.ops.checks import check_channels_stride, parse_terms, positive_int, terms_problem, window_problem
from rsanet.ops.window import check_kernel_size, spatial_downsample, unfold_window, window_valid_mask

__all__ = ["LocalSelfAttention", "Options", "check", "build"]


class LocalSelfAttention(nn.Module):
    """Multi-query local self-attention (Table 2 rows 4-7), (B, C_in, T, H, W) -> (B, C_out, T, H/s, W/s).

    Args:
        attention: non-empty subset of {"content", "position"}: q K^T and/or q P^T in the logits.
        softmax: apply the softmax over the window. ``softmax=False`` is the plain kernel q P^T and needs
            ``attention=("position",)``.
    Parameters: ``query`` (C_in -> L*C_Q), ``key`` and ``value`` (C_in -> C_Q) 1x1x1 convs without bias, and
    ``P`` (M, C_Q) when "position" is used. The weights a (B, L, M, T, H, W), after the softmax, pass
    through ``tap_attention``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int] = (5, 7, 7),
                 queries: int = 8, attention: str | Iterable[str] = ("content", "position"), softmax: bool = True,
                 stride: int = 1):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = check_channels_stride(in_channels, out_channels, stride)
        self.queries = positive_int(queries, "queries")
        if out_channels % queries:
            raise ValueError(f"out_channels ({out_channels}) must be divisible by queries ({queries})")
        self.kernel_size = check_kernel_size(kernel_size)
        self.attention = parse_terms(attention, ("content", "position"), "attention")
        self.softmax = bool(softmax)
        if not self.softmax and self.attention != ("position",):
            raise ValueError(f"softmax=False is the plain kernel q P^T and needs attention=('position',), "
                             f"got attention={self.attention}")
        self.head_dim = cq = out_channels // queries
        m = self.kernel_size[0] * self.kernel_size[1] * self.kernel_size[2]
        self.query = nn.Conv3d(in_channels, queries * cq, 1, bias=False)
        self.key = nn.Conv3d(in_channels, cq, 1, bias=False) if "content" in self.attention else None
        self.value = nn.Conv3d(in_channels, cq, 1, bias=False)
        self.P = nn.Parameter(torch.empty(m, cq)) if "position" in self.attention else None
        self.tap_attention = nn.Identity()
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """MSRA (kaiming normal, fan_in) for the projections; P ~ N(0, 1/C_Q)."""
        for conv in (self.query, self.key, self.value):
            if conv is not None:
                nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
        if self.P is not None:
            nn.init.normal_(self.P, std=self.head_dim ** -0.5)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, queries={self.queries}, "
                f"attention={self.attention}, softmax={self.softmax}, stride={self.stride}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"LocalSelfAttention expects (B, {self.in_channels}, T, H, W), got {tuple(x.shape)}")
        b, _, t, h, w = x.shape
        n, L, cq = t * h * w, self.queries, self.head_dim
        q = self.query(x).reshape(b, L, cq, n)  # (B, L*C_Q, T, H, W) -> (B, L, C_Q, N)
        logits = 0
        if self.key is not None:
            # (B, C_Q, T, H, W, M) -> (B, C_Q, N, M): the explicit key windows
            keys = unfold_window(self.key(x), self.kernel_size).reshape(b, cq, n, -1)
            logits = torch.einsum("blcn,bcnm->blmn", q, keys)  # q K^T, (B, L, M, N)
        if self.P is not None:
            logits = logits + torch.einsum("blcn,mc->blmn", q, self.P)  # q P^T, (B, L, M, N)
        if self.softmax:
            valid = window_valid_mask((t, h, w), self.kernel_size, x.device).reshape(1, 1, -1, n)  # (1, 1, M, N)
            logits = (logits * cq ** -0.5).masked_fill(~valid, float("-inf"))
            attn = torch.softmax(logits, dim=2)  # over the window, (B, L, M, N)
        else:
            attn = logits
        attn = self.tap_attention(attn.reshape(b, L, -1, t, h, w)).reshape(b, L, -1, n)  # (B, L, M, N)
        # (B, C_Q, T, H, W, M) -> (B, C_Q, N, M): the explicit value windows
        values = unfold_window(self.value(x), self.kernel_size).reshape(b, cq, n, -1)
        y = torch.einsum("blmn,bcnm->blcn", attn, values)  # (B, L, C_Q, N)
        y = y.reshape(b, L * cq, t, h, w)  # (B, L, C_Q, N) -> (B, C_out, T, H, W)
        return spatial_downsample(y, self.stride)


# ------------------------------------------------------------------------------------------------
# The table entry ``self_attention`` (rsanet.ops.TRANSFORMS): its config section and builder.
# ------------------------------------------------------------------------------------------------
@dataclass
class Options:
    """``model.transform.self_attention``: local self-attention over the RSA window (Table 2 rows 4-7)."""

    kernel_size: list[int] = field(default_factory=lambda: [5, 7, 7])  # M = t x h x w window (Table 2: 5x7x7)
    queries: int = 8  # L, number of queries (heads), as RSA's
    # terms: qk^T and/or qP^T
    attention: list[Literal["content", "position"]] = field(default_factory=lambda: ["content", "position"])
    softmax: bool = True  # apply the softmax over the window (False: the plain kernel qP^T, needs attention [position])


def check(options: Options, key: str) -> Optional[str]:
    """What is wrong with the ``model.transform.self_attention`` keys, or None."""
    o = options
    problem = window_problem(o.kernel_size, f"{key}.kernel_size")
    problem = problem or terms_problem(o.attention, f"{key}.attention", ("content", "position"))
    if problem:
        return problem
    if o.queries < 1:
        return f"`{key}.queries` must be positive, got {o.queries}"
    if not o.softmax and sorted(o.attention) != ["position"]:
        return (f"`{key}.softmax: false` is the plain kernel q P^T and needs `{key}.attention: [position]`, "
                f"got {o.attention}")
    return None


def build(options: Options, in_channels: int, out_channels: int, stride: int = 1) -> LocalSelfAttention:
    """The self-attention layer of ``model.transform.self_attention``."""
    o = options
    return LocalSelfAttention(in_channels, out_channels, kernel_size=tuple(o.kernel_size), queries=o.queries,
                              attention=tuple(o.attention), softmax=o.softmax, stride=stride)
