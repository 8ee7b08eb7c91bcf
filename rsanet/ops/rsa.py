"""Relational self-attention (RSA, Sec. 4): the layer and its efficient, memory-linear forward (Eq. 12).

For each position n with window X_n (M offsets, see :mod:`rsanet.ops.window`), L queries q_l (C_Q channels
each), and one key K_n and value V_n (M x C_Q) shared by all queries (multi-query, Sec. 4.2), RSA computes
(Eq. 8)

    y_l = (kappa^V_l + kappa^R_l) (X^V + X^R)

with the basic kernel kappa^V = q P^T, P = H2 P1 (Eq. 12), the relational kernel
kappa^R = corr(q, K) H1 H2^T (Eqs. 5, 6, 9, 10), the basic context X^V = V and the relational context
X^R = V V^T G (Eq. 7). :func:`rsanet.ops.rsa_reference` evaluates exactly this, literally. The forward of
:class:`RSA` evaluates the same numbers in the factored order of Eq. 12,

    y_l = q_l (P1^T + K (*) r(H1)) (H2^T V) (I + V^T G),

where every window sum is a depthwise-style conv3d, so nothing of size B*N*M*C is ever formed.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from rsanet.ops.window import check_kernel_size, spatial_downsample, window_conv3d

__all__ = ["RSA", "parse_terms"]

_NORMS = ("l2", "none", "batchnorm")


def parse_terms(value: str | Iterable[str], allowed: Sequence[str], name: str) -> tuple[str, ...]:
    """A non-empty subset of ``allowed`` given as one name or an iterable of names, in canonical order."""
    names = (value,) if isinstance(value, str) else tuple(value)
    unknown = [v for v in names if v not in allowed]
    if unknown:
        raise ValueError(f"{name}: unknown term {unknown[0]!r}; choose from {list(allowed)}")
    if not names:
        raise ValueError(f"{name} must name at least one of {list(allowed)}, got {value!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"{name} lists a term twice: {value!r}")
    return tuple(a for a in allowed if a in names)


def _positive_int(value, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _accumulation_dtype(t: torch.Tensor) -> torch.dtype:
    """float32 for half types (bf16/fp16 autocast), the tensor's own dtype for float32/float64."""
    return torch.promote_types(t.dtype, torch.float32)


class RSA(nn.Module):
    """Relational self-attention layer (Eqs. 5-12), (B, C_in, T, H, W) -> (B, C_out, T, H/s, W/s).

    Args:
        in_channels, out_channels: C_in and C_out = L * C_Q.
        kernel_size: window (t, h, w), M = t*h*w; even sizes allowed (see :mod:`rsanet.ops.window`).
        queries: L, the number of queries; out_channels must be divisible by it.
        latent_dim: D of H = H1 H2^T and P = H2 P1; None (or 0) means C_Q.
        groups: G of the query-key correlation; None (or 0) means C_Q (Hadamard product, Eq. 6), 1 is the
            dot product of Eq. 5; it must divide C_Q.
        kernel: non-empty subset of {"basic", "relational"} (Table 4a).
        context: non-empty subset of {"basic", "relational"} (Table 4a).
        norm: "l2" (default), "none" or "batchnorm", applied to q, k and v (Table 6c).
        stride: spatial stride; the output is averaged over stride x stride cells after the transform.

    Parameters (the paper's parameterization; nothing else is learnable except BatchNorm affines when
    norm="batchnorm"): ``query``/``key``/``value`` 1x1x1 convs without bias (C_in -> L*C_Q, C_Q, C_Q; no
    ``key`` when the kernel is basic only, since nothing would read it);
    ``P1`` (D, C_Q) for the basic kernel; ``H1`` (M, G, D) for the relational kernel (row-major (M, G) is the
    paper's M*G x D matrix; the C_Q/G channels of a group share their slice); ``H2`` (M, D), shared by both
    kernels; ``G`` (M, C_Q) for the relational context; ``I`` (C_Q, C_Q), initialised to the identity, only
    when the context is basic and relational (the context is then V I + V V^T G).

    Initialisation: MSRA (kaiming normal, fan_in) for the projections; the other factors are zero-mean
    normal with a variance chosen so that, for unit-norm q, k, v of random direction, every stage keeps
    an expected squared norm of about one: P1 ~ N(0, 1/D), H1 ~ N(0, C_Q / (D*M)), H2 ~ N(0, 1/M),
    G ~ N(0, 1/(M + C_Q)); I = identity.

    Kernel taps (for visualisation, via forward hooks): ``tap_basic_kernel`` sees u_V = q P1^T and
    ``tap_relational_kernel`` sees u_R = q (K (*) r(H1)), each (B, L, D, T, H, W) before striding;
    :meth:`expand_kernel` turns a latent kernel into the kernel over the window (kappa = u H2^T).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int] = (5, 7, 7),
                 queries: int = 8, latent_dim: int | None = None, groups: int | None = None,
                 kernel: str | Iterable[str] = ("basic", "relational"),
                 context: str | Iterable[str] = ("basic", "relational"), norm: str = "l2", stride: int = 1):
        super().__init__()
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.out_channels = _positive_int(out_channels, "out_channels")
        self.queries = _positive_int(queries, "queries")
        if out_channels % queries:
            raise ValueError(f"out_channels ({out_channels}) must be divisible by queries ({queries})")
        self.kernel_size = check_kernel_size(kernel_size)
        self.kernel_terms = parse_terms(kernel, ("basic", "relational"), "kernel")
        self.context_terms = parse_terms(context, ("basic", "relational"), "context")
        if norm not in _NORMS:
            raise ValueError(f"norm must be one of {list(_NORMS)}, got {norm!r}")
        self.norm = norm
        self.stride = _positive_int(stride, "stride")
        cq = out_channels // queries
        self.head_dim = cq
        self.latent_dim = cq if latent_dim in (None, 0) else _positive_int(latent_dim, "latent_dim")
        self.groups = cq if groups in (None, 0) else _positive_int(groups, "groups")
        if cq % self.groups:
            raise ValueError(f"groups ({self.groups}) must divide the query width C_Q = "
                             f"out_channels / queries = {cq}")
        self.window = math.prod(self.kernel_size)
        self._build_parameters()
        self.reset_parameters()

    # ----------------------------------------------------------------------------------------------
    # Parameters
    # ----------------------------------------------------------------------------------------------
    def _build_parameters(self) -> None:
        cq, d, m, g, L = self.head_dim, self.latent_dim, self.window, self.groups, self.queries
        relational_kernel = self.has("kernel", "relational")
        self.query = nn.Conv3d(self.in_channels, L * cq, 1, bias=False)
        # The key only feeds the relational kernel; a basic-only kernel has none (no unused parameters).
        self.key = nn.Conv3d(self.in_channels, cq, 1, bias=False) if relational_kernel else None
        self.value = nn.Conv3d(self.in_channels, cq, 1, bias=False)
        if self.norm == "batchnorm":
            self.norm_q, self.norm_v = nn.BatchNorm3d(L * cq), nn.BatchNorm3d(cq)
            self.norm_k = nn.BatchNorm3d(cq) if relational_kernel else None
        self.P1 = nn.Parameter(torch.empty(d, cq)) if self.has("kernel", "basic") else None
        self.H1 = nn.Parameter(torch.empty(m, g, d)) if self.has("kernel", "relational") else None
        self.H2 = nn.Parameter(torch.empty(m, d))
        self.G = nn.Parameter(torch.empty(m, cq)) if self.has("context", "relational") else None
        self.I = nn.Parameter(torch.empty(cq, cq)) if len(self.context_terms) == 2 else None
        self.tap_basic_kernel = nn.Identity()
        self.tap_relational_kernel = nn.Identity()

    def has(self, part: str, term: str) -> bool:
        """Whether ``term`` ("basic"/"relational") is among the ``part`` ("kernel"/"context") terms."""
        return term in (self.kernel_terms if part == "kernel" else self.context_terms)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """MSRA init of the projections; variance-preserving normal init of P1, H1, H2, G; I = identity."""
        for conv in (self.query, self.key, self.value):
            if conv is not None:
                nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
        cq, d, m = self.head_dim, self.latent_dim, self.window
        if self.P1 is not None:
            nn.init.normal_(self.P1, std=(1.0 / d) ** 0.5)
        if self.H1 is not None:
            nn.init.normal_(self.H1, std=(cq / (d * m)) ** 0.5)
        nn.init.normal_(self.H2, std=(1.0 / m) ** 0.5)
        if self.G is not None:
            nn.init.normal_(self.G, std=(1.0 / (m + cq)) ** 0.5)
        if self.I is not None:
            self.I.copy_(torch.eye(cq))

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, queries={self.queries}, "
                f"latent_dim={self.latent_dim}, groups={self.groups}, kernel={self.kernel_terms}, "
                f"context={self.context_terms}, norm={self.norm!r}, stride={self.stride}")

    # ----------------------------------------------------------------------------------------------
    # Pieces shared with the reference and the paper transcription
    # ----------------------------------------------------------------------------------------------
    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalized query, key, value: q (B, L, C_Q, T, H, W), k and v (B, C_Q, T, H, W).

        The three 1x1x1 projections run as one conv (their weights stacked). L2 norms are computed in at
        least float32.
        """
        b, _, t, h, w = x.shape
        L, cq = self.queries, self.head_dim
        convs = [self.query, self.value] if self.key is None else [self.query, self.value, self.key]
        qvk = F.conv3d(x, torch.cat([c.weight for c in convs], dim=0))  # (B, (L + 1 [+ 1]) * C_Q, T, H, W)
        q, v, k = torch.split(qvk, [L * cq, cq, cq], dim=1) if self.key is not None else (*torch.split(qvk, [L * cq, cq], dim=1), None)
        if self.norm == "batchnorm":
            q, v = self.norm_q(q), self.norm_v(v)
            k = None if k is None else self.norm_k(k)
        q = q.reshape(b, L, cq, t, h, w)  # (B, L*C_Q, T, H, W) -> (B, L, C_Q, T, H, W)
        if self.norm == "l2":
            acc = _accumulation_dtype(q)
            q = F.normalize(q.to(acc), dim=2)
            k = None if k is None else F.normalize(k.to(acc), dim=1)
            v = F.normalize(v.to(acc), dim=1)
        return q, k, v

    def channel_h1(self) -> torch.Tensor:
        """H1 expanded to every key channel: (M, G, D) -> (M, C_Q, D), channel c uses group c // (C_Q / G)."""
        return self.H1.repeat_interleave(self.head_dim // self.groups, dim=1)

    def expand_kernel(self, u: torch.Tensor, dim: int = 2) -> torch.Tensor:
        """Kernel over the window from a latent kernel: kappa = u H2^T.

        ``u`` has the latent dimension D at ``dim`` (a tap output (B, L, D, T, H, W) uses the default dim=2);
        the result drops that dimension and appends the window, e.g. (B, L, T, H, W, t, h, w).
        """
        u = u.movedim(dim, -1)  # (..., D)
        kappa = torch.einsum("...d,md->...m", u, self.H2.to(u.dtype))  # (..., D) x (M, D) -> (..., M)
        return kappa.reshape(*kappa.shape[:-1], *self.kernel_size)  # (..., M) -> (..., t, h, w)

    # ----------------------------------------------------------------------------------------------
    # Efficient forward (Eq. 12)
    # ----------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"RSA expects (B, {self.in_channels}, T, H, W), got {tuple(x.shape)}")
        b, _, t, h, w = x.shape
        n = t * h * w
        L, cq, d = self.queries, self.head_dim, self.latent_dim
        q, k, v = self.project(x)
        u = self._latent_kernel(q, k)  # (B, L, D, N)
        # Value side, ONE conv for H2 and G (they read the same value channels): every value channel is
        # convolved separately with D + C_Q window filters, so v is viewed as (B*C_Q, 1, T, H, W).
        filters = self.H2 if self.G is None else torch.cat([self.H2, self.G], dim=1)  # (M, D [+ C_Q])
        filters = filters.t().reshape(-1, 1, *self.kernel_size)  # (M, F) -> (F, 1, t, h, w)
        vf = window_conv3d(v.reshape(b * cq, 1, t, h, w), filters.to(v.dtype))  # (B*C_Q, F, T, H, W)
        vf = vf.reshape(b, cq, -1, n)  # (B*C_Q, F, T, H, W) -> (B, C_Q, F, N)
        acc = _accumulation_dtype(vf)
        with torch.autocast(device_type=x.device.type, enabled=False):
            y = self._aggregate(u.to(acc), vf.to(acc))  # (B, L, C_Q, N)
        # Back to the conv dtype (bf16 under autocast): (B, L, C_Q, N) -> (B, C_out, T, H, W).
        y = y.reshape(b, L * cq, t, h, w).to(vf.dtype)
        return spatial_downsample(y, self.stride)

    def _latent_kernel(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """u = q (P1^T + K (*) r(H1)) (Eqs. 10, 12): (B, L, D, N), through the two kernel taps."""
        b, L, cq, t, h, w = q.shape
        n, d = t * h * w, self.latent_dim
        acc = _accumulation_dtype(q)
        q = q.reshape(b, L, cq, n)  # (B, L, C_Q, T, H, W) -> (B, L, C_Q, N)
        u = None
        if self.H1 is not None:
            # A = K (*) r(H1) (Eq. 10): a grouped conv, key channel c with its D filters H1[:, c, :].
            filters = self.channel_h1().permute(1, 2, 0).reshape(cq * d, 1, *self.kernel_size)  # (M, C_Q, D) -> (C_Q*D, 1, t, h, w)
            a = window_conv3d(k, filters.to(k.dtype), groups=cq)  # (B, C_Q*D, T, H, W)
            a = a.reshape(b, cq, d, n)  # (B, C_Q*D, T, H, W) -> (B, C_Q, D, N)
            with torch.autocast(device_type=q.device.type, enabled=False):
                u_r = torch.einsum("blcn,bcdn->bldn", q.to(acc), a.to(acc))  # (B, L, D, N)
            u = self.tap_relational_kernel(u_r.reshape(b, L, d, t, h, w)).reshape(b, L, d, n)
        if self.P1 is not None:
            with torch.autocast(device_type=q.device.type, enabled=False):
                u_v = torch.einsum("blcn,dc->bldn", q.to(acc), self.P1.to(acc))  # (B, L, D, N)
            u_v = self.tap_basic_kernel(u_v.reshape(b, L, d, t, h, w)).reshape(b, L, d, n)
            u = u_v if u is None else u + u_v
        return u

    def _aggregate(self, u: torch.Tensor, vf: torch.Tensor) -> torch.Tensor:
        """y = u (H2^T V) (context factor) with the query side first: (B, L, C_Q, N).

        ``vf`` (B, C_Q, D [+ C_Q], N) holds Bv = H2^T V (the D first filters) and, for a relational context,
        E = V^T G. Basic context: y = u Bv; relational: (u Bv) E; both: (u Bv)(I + E).
        """
        d = self.latent_dim
        bv = vf[:, :, :d]  # (B, C_Q, D, N)
        w = torch.einsum("bldn,bcdn->blcn", u, bv)  # (B, L, C_Q, N)
        if self.G is None:
            return w
        e = vf[:, :, d:]  # (B, C_Q, C_Q, N): e[:, c', c] = sum_m V[m, c'] G[m, c]
        if self.I is not None:
            e = e + self.I.to(e.dtype)[None, :, :, None]  # I + V^T G, (B, C_Q, C_Q, N)
        return torch.einsum("blcn,bcen->blen", w, e)  # (B, L, C_Q, N)
