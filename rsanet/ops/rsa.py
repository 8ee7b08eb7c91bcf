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

from rsanet.ops.channelwise_conv import channelwise_window_conv
from rsanet.ops.window import check_kernel_size, spatial_downsample

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


class _DenseGrad(torch.autograd.Function):
    """Identity whose backward packs the incoming gradient densely (row-major), so that the batched matmuls
    behind it take their fast path whatever memory format the caller's gradient has."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


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
        l2_eps: the L2 norm divides by max(|x|, 1e-12) when 0 (default), by sqrt(|x|^2 + l2_eps) when > 0
            (the authors' code: 1e-6; needed to reproduce their released models exactly).
        stride: spatial stride; the output is averaged over stride x stride cells after the transform.

    Parameters (the paper's parameterization; nothing else is learnable except BatchNorm affines when
    norm="batchnorm"): ``query``/``key``/``value`` 1x1x1 convs without bias (C_in -> L*C_Q, C_Q, C_Q; no
    ``key`` when the kernel is basic only, since nothing would read it);
    ``P1`` (D, C_Q) for the basic kernel; ``H1`` (M, G, D) for the relational kernel (row-major (M, G) is the
    paper's M*G x D matrix; the C_Q/G channels of a group share their slice); ``H2`` (M, D), shared by both
    kernels; ``G`` (M, C_Q) for the relational context; ``I`` (C_Q, C_Q), initialised to the identity, only
    when the context is basic and relational (the context is then V I + V V^T G).

    Initialisation (:meth:`reset_parameters`): a layer built on its own starts ``"variance_preserving"``;
    a model built from a config re-initialises it by ``model.transform.rsa_init``, whose default,
    ``"authors"``, is what the authors' code gives. The method's doc gives both schemes.

    Kernel taps (for visualisation, via forward hooks): ``tap_basic_kernel`` sees u_V = q P1^T and
    ``tap_relational_kernel`` sees u_R = q (K (*) r(H1)), each (B, L, D, T, H, W) before striding;
    :meth:`expand_kernel` turns a latent kernel into the kernel over the window (kappa = u H2^T).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int] = (5, 7, 7),
                 queries: int = 8, latent_dim: int | None = None, groups: int | None = None,
                 kernel: str | Iterable[str] = ("basic", "relational"),
                 context: str | Iterable[str] = ("basic", "relational"), norm: str = "l2", stride: int = 1,
                 l2_eps: float = 0.0):
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
        if not l2_eps >= 0:
            raise ValueError(f"l2_eps must be >= 0, got {l2_eps!r}")
        self.l2_eps = float(l2_eps)
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
    def reset_parameters(self, scheme: str = "variance_preserving") -> None:
        """Initialise every factor; ``I`` is the identity under both schemes.

        ``"authors"``: what the authors' code gives. Their ResNet re-initialises every Conv3d with
        ``kaiming_normal_(mode="fan_out", nonlinearity="relu")``, i.e. N(0, 2 / fan_out) over *their* shapes:
        q, k and v are one stacked 1x1x1 conv with (L + 2) C_Q outputs ((L + 1) C_Q without the key), so all
        three get std sqrt(2 / ((L + 2) C_Q)); H1 is a conv with C_Q * D outputs over the M window taps
        (groups = C_Q), std sqrt(2 / (C_Q D M)); H2 (D outputs) sqrt(2 / (D M)); G (C_Q outputs)
        sqrt(2 / (C_Q M)); and ``P1 = randn * sqrt(1 / (M D))``. With G < C_Q correlation groups (a shape
        their code cannot build), H1 takes the fan_out of the equivalent grouped conv, sqrt(2 / (G D M)).

        ``"variance_preserving"``: MSRA fan_in for the projections; the other factors are zero-mean normal
        with a variance chosen so that, for unit-norm q, k, v of random direction, every factor keeps the
        expected squared norm of its input: P1 ~ N(0, 1/D), H1 ~ N(0, C_Q / (D M)), H2 ~ N(0, 1/M),
        G ~ N(0, 1/(M + C_Q)).
        """
        stds = self.init_stds(scheme)
        for name, conv in (("query", self.query), ("key", self.key), ("value", self.value)):
            if conv is not None:
                nn.init.normal_(conv.weight, std=stds[name])
        for name in ("P1", "H1", "H2", "G"):
            param = getattr(self, name)
            if param is not None:
                nn.init.normal_(param, std=stds[name])
        if self.I is not None:
            self.I.copy_(torch.eye(self.head_dim))

    def init_stds(self, scheme: str = "variance_preserving") -> dict[str, float]:
        """Standard deviation of each factor under ``scheme`` (see :meth:`reset_parameters`)."""
        cq, d, m, g, L = self.head_dim, self.latent_dim, self.window, self.groups, self.queries
        if scheme == "authors":
            stacked = (L + 1 + (self.key is not None)) * cq  # outputs of their one q/k/v projection
            proj = math.sqrt(2.0 / stacked)
            return {"query": proj, "key": proj, "value": proj, "P1": math.sqrt(1.0 / (m * d)),
                    "H1": math.sqrt(2.0 / (g * d * m)), "H2": math.sqrt(2.0 / (d * m)), "G": math.sqrt(2.0 / (cq * m))}
        if scheme == "variance_preserving":
            # the same float expressions as before the schemes existed, so that the values stay bit-identical
            fan_in = math.sqrt(2.0) / math.sqrt(self.in_channels)  # kaiming_normal_(mode="fan_in"), relu gain
            return {"query": fan_in, "key": fan_in, "value": fan_in, "P1": (1.0 / d) ** 0.5,
                    "H1": (cq / (d * m)) ** 0.5, "H2": (1.0 / m) ** 0.5, "G": (1.0 / (m + cq)) ** 0.5}
        raise ValueError(f"unknown RSA init scheme {scheme!r}; choose 'authors' or 'variance_preserving'")

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, queries={self.queries}, "
                f"latent_dim={self.latent_dim}, groups={self.groups}, kernel={self.kernel_terms}, "
                f"context={self.context_terms}, norm={self.norm!r}, stride={self.stride}"
                + (f", l2_eps={self.l2_eps:g}" if self.l2_eps else ""))

    # ----------------------------------------------------------------------------------------------
    # Helpers shared with the paper transcription and the visualisation
    # ----------------------------------------------------------------------------------------------
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
    # Efficient forward (Eq. 12). Activations are kept position-major, (B, N, ...), so that every
    # per-position product is one batched matmul over B*N small contiguous matrices.
    # ----------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, T, H, W) -> (B, C_out, T, H/s, W/s); the result is in channels-last memory format."""
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"RSA expects (B, {self.in_channels}, T, H, W), got {tuple(x.shape)}")
        b, _, t, h, w = x.shape
        q, k, v = self._project(x)  # (B, N, L, C_Q), (B, N, C_Q) or None, (B, N, C_Q)
        out_dtype = q.dtype if not torch.is_autocast_enabled(x.device.type) else \
            torch.get_autocast_dtype(x.device.type)
        acc = _accumulation_dtype(q)
        u = self._latent_kernel(q, k, (t, h, w), acc)  # (B, N, L, D)
        y = self._aggregate(u, v, (t, h, w), acc)  # (B, N, L, C_Q)
        if torch.is_grad_enabled() and y.requires_grad:
            y = _DenseGrad.apply(y)
        # (B, N, L, C_Q) -> (B, T, H, W, C_out) -> (B, C_out, T, H, W): a channels-last view, no copy
        y = y.reshape(b, t, h, w, -1).permute(0, 4, 1, 2, 3).to(out_dtype)
        return spatial_downsample(y, self.stride)

    def _project(self, x: torch.Tensor):
        """Normalized q (B, N, L, C_Q), k (B, N, C_Q) (None without a relational kernel), v (B, N, C_Q).

        The 1x1x1 projections run as one matmul of the stacked weights; L2 norms in at least float32.
        """
        b, c_in = x.shape[:2]
        L, cq = self.queries, self.head_dim
        convs = [self.query, self.value] + ([self.key] if self.key is not None else [])
        weight = torch.cat([conv.weight for conv in convs], dim=0).flatten(1)  # (C_qvk, C_in, 1, 1, 1) -> (C_qvk, C_in)
        # (B, C_in, T, H, W) -> (B, C_in, N) -> (B, N, C_in); @ (C_in, C_qvk) -> (B, N, C_qvk)
        qvk = torch.matmul(x.reshape(b, c_in, -1).transpose(1, 2), weight.t())
        n = qvk.shape[1]
        if self.norm == "batchnorm":
            # BatchNorm3d on channel-first views: (B, N, C) -> (B, C, N, 1, 1) -> back to (B, N, C)
            bns = [self.norm_q, self.norm_v] + ([self.norm_k] if self.key is not None else [])
            parts = torch.split(qvk, [L * cq] + [cq] * (len(bns) - 1), dim=2)
            qvk = torch.cat([bn(p.transpose(1, 2)[..., None, None])[..., 0, 0].transpose(1, 2)
                             for bn, p in zip(bns, parts)], dim=2)
        q = qvk[:, :, :L * cq].reshape(b, n, L, cq)  # (B, N, L*C_Q) -> (B, N, L, C_Q)
        v = qvk[:, :, L * cq:(L + 1) * cq]  # (B, N, C_Q)
        k = qvk[:, :, (L + 1) * cq:] if self.key is not None else None  # (B, N, C_Q)
        if self.norm == "l2":
            acc = _accumulation_dtype(q)
            q, v = self._l2(q.to(acc)), self._l2(v.to(acc))
            k = self._l2(k.to(acc)) if k is not None else None
        return q, k, v

    def _l2(self, z: torch.Tensor) -> torch.Tensor:
        """L2 norm over the last (channel) dim: z / max(|z|, 1e-12), or z / sqrt(|z|^2 + l2_eps) when l2_eps > 0."""
        if self.l2_eps > 0:
            return z * torch.rsqrt(z.square().sum(dim=-1, keepdim=True) + self.l2_eps)
        return F.normalize(z, dim=-1)

    def _window_conv(self, z: torch.Tensor, filters: torch.Tensor, thw) -> torch.Tensor:
        """Channel-wise window conv of position-major z (B, N, C_Q) with (C_Q*F, 1, t, h, w) filters:
        (B, N, C_Q, F)."""
        b, n, cq = z.shape
        z = z.reshape(b, *thw, cq).permute(0, 4, 1, 2, 3)  # (B, N, C_Q) -> (B, C_Q, T, H, W), channels-last view
        out = channelwise_window_conv(z, filters)  # (B, C_Q*F, T, H, W)
        # (B, C_Q*F, T, H, W) -> (B, T, H, W, C_Q*F) -> (B, N, C_Q, F), densely packed for the batched matmuls
        # (no copy when out is channels-last)
        return out.permute(0, 2, 3, 4, 1).reshape(b, n, cq, -1).contiguous()

    def _latent_kernel(self, q: torch.Tensor, k: torch.Tensor | None, thw, acc: torch.dtype) -> torch.Tensor:
        """u = q (P1^T + K (*) r(H1)) (Eqs. 10, 12): (B, N, L, D), passed through the two kernel taps."""
        b, n, L, cq = q.shape
        d = self.latent_dim
        u = None
        if self.H1 is not None:
            # A = K (*) r(H1) (Eq. 10): key channel c convolved with its D filters H1[:, c, :]
            # (M, C_Q, D) -> (C_Q, D, M) -> (C_Q*D, 1, t, h, w)
            filters = self.channel_h1().permute(1, 2, 0).reshape(cq * d, 1, *self.kernel_size)
            a = self._window_conv(k, filters, thw)  # (B, N, C_Q, D)
            with torch.autocast(q.device.type, enabled=False):
                u_r = torch.matmul(q.to(acc), a.to(acc))  # (B, N, L, C_Q) @ (B, N, C_Q, D) -> (B, N, L, D)
            u = self._tap(self.tap_relational_kernel, u_r, thw)
        if self.P1 is not None:
            with torch.autocast(q.device.type, enabled=False):
                u_v = torch.matmul(q.to(acc), self.P1.t().to(acc))  # (B, N, L, C_Q) @ (C_Q, D) -> (B, N, L, D)
            u_v = self._tap(self.tap_basic_kernel, u_v, thw)
            u = u_v if u is None else u + u_v
        return u

    @staticmethod
    def _tap(tap: nn.Module, u: torch.Tensor, thw) -> torch.Tensor:
        """Show a latent kernel (B, N, L, D) to ``tap`` as (B, L, D, T, H, W); returns it position-major."""
        b, n, L, d = u.shape
        shown = tap(u.reshape(b, *thw, L, d).permute(0, 4, 5, 1, 2, 3))  # (B, T, H, W, L, D) -> (B, L, D, T, H, W)
        return shown.permute(0, 3, 4, 5, 1, 2).reshape(b, n, L, d)  # (B, L, D, T, H, W) -> (B, N, L, D)

    def _aggregate(self, u: torch.Tensor, v: torch.Tensor, thw, acc: torch.dtype) -> torch.Tensor:
        """y = u (H2^T V)(context factor), query side first: (B, N, L, C_Q).

        ONE channel-wise conv of the value with the stacked filters [H2 | G] gives Bv = H2^T V (D filters) and,
        for a relational context, E = V^T G (C_Q filters). Basic context: y = u Bv^T; relational:
        (u Bv^T) E; both: (u Bv^T)(I + E).
        """
        d = self.latent_dim
        filters = self.H2 if self.G is None else torch.cat([self.H2, self.G], dim=1)  # (M, D [+ C_Q])
        cq = v.shape[-1]
        # the same filters for every value channel: (M, F) -> (F, 1, t, h, w) -> (C_Q*F, 1, t, h, w)
        filters = filters.t().reshape(1, -1, 1, *self.kernel_size).expand(cq, -1, -1, -1, -1, -1).flatten(0, 1)
        vf = self._window_conv(v, filters, thw)  # (B, N, C_Q, F): vf[..., c', f] = sum_m V[m, c'] filters[m, f]
        with torch.autocast(u.device.type, enabled=False):
            # (B, N, C_Q, D [+ C_Q]) -> Bv (B, N, C_Q, D) and E (B, N, C_Q, C_Q), e[.., c', c] = sum_m V[m, c'] G[m, c].
            # Contiguous copies: batched matmul on CPU needs densely packed matrices for its fast path.
            bv, *e = vf.to(acc).split([d] + ([cq] if self.G is not None else []), dim=-1)
            w = torch.matmul(u, bv.contiguous().transpose(-1, -2))  # (B, N, L, D) @ (B, N, D, C_Q) -> (B, N, L, C_Q)
            if self.G is None:
                return w
            e = e[0] + self.I.to(acc) if self.I is not None else e[0].contiguous()  # I + V^T G, or V^T G
            return torch.matmul(w, e)  # (B, N, L, C_Q) @ (B, N, C_Q, C_Q) -> (B, N, L, C_Q)
