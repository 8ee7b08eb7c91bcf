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

where every window sum is a depthwise-style conv3d, so nothing of size B*N*M*C is ever formed. The
aggregation runs as one autograd function with a hand-written backward (:mod:`rsanet.ops.rsa_core`), which
keeps only the normalized q, k, v and, in the default memory mode, the outputs of the two window convs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Literal, Optional, Sequence

import torch
import torch.nn as nn

from rsanet.ops.channelwise_conv import STRATEGIES, resolve_strategy
from rsanet.ops.checks import check_channels_stride, parse_terms, positive_int, terms_problem, window_problem
from rsanet.ops.rsa_core import MEMORY_MODES, rsa_core
from rsanet.ops.rsa_full import rsa_undecomposed
from rsanet.ops.rsa_qkv import project, split_normalized
from rsanet.ops.window import check_kernel_size, spatial_downsample

__all__ = ["RSA", "Options", "check", "build", "init_weights"]

_NORMS = ("l2", "none", "batchnorm")


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
        l2_eps: the L2 norm divides by max(|x|, 1e-12) when 0 (default), by sqrt(|x|^2 + l2_eps) when > 0
            (the authors' code: 1e-6; needed to reproduce their released models exactly).
        stride: spatial stride; the output is averaged over stride x stride cells after the transform.
        memory: what backward keeps (no effect on the numbers): "save" keeps the normalized q, k, v and the
            outputs of the two window convs; "recompute" keeps q, k, v only and re-runs the window convs in
            backward (less memory, more time; see :mod:`rsanet.ops.rsa_core` and README "Performance").
        window_conv: strategy of the window convolutions, see :mod:`rsanet.ops.channelwise_conv` (no effect
            on the numbers).
        decompose: True (default) factors H = H1 H2^T and P = H2 P1 (Sec. 4.2); False keeps H (M*G x M) and
            P (M x C_Q) whole (Table 4b's row "D = -", :mod:`rsanet.ops.rsa_full`): D is then M, H2 = I is not
            stored, and ``memory``/``window_conv`` strategies of the decomposed core do not apply.

    Parameters (the paper's parameterization; nothing else is learnable except BatchNorm affines when
    norm="batchnorm"): ``query``/``key``/``value`` 1x1x1 convs without bias (C_in -> L*C_Q, C_Q, C_Q; no
    ``key`` when the kernel is basic only, since nothing would read it);
    ``P1`` (D, C_Q) for the basic kernel; ``H1`` (M, G, D) for the relational kernel (row-major (M, G) is the
    paper's M*G x D matrix; the C_Q/G channels of a group share their slice); ``H2`` (M, D), shared by both
    kernels; ``G`` (M, C_Q) for the relational context; ``I`` (C_Q, C_Q), initialised to the identity, only
    when the context is basic and relational (the context is then V I + V V^T G).

    Initialisation (:meth:`reset_parameters`): a layer built on its own starts ``"variance_preserving"``;
    a model built from a config re-initialises it by ``model.transform.rsa.init``, whose default,
    ``"authors"``, is what the authors' code gives. The method's doc gives both schemes.

    Kernel taps (for visualisation, via forward hooks): ``tap_basic_kernel`` sees u_V = q P1^T and
    ``tap_relational_kernel`` sees u_R = q (K (*) r(H1)), each (B, L, D, T, H, W) before striding;
    :meth:`expand_kernel` turns a latent kernel into the kernel over the window (kappa = u H2^T).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int] = (5, 7, 7),
                 queries: int = 8, latent_dim: int | None = None, groups: int | None = None,
                 kernel: str | Iterable[str] = ("basic", "relational"),
                 context: str | Iterable[str] = ("basic", "relational"), norm: str = "l2", stride: int = 1,
                 l2_eps: float = 0.0, memory: str = "save", window_conv: str = "auto", decompose: bool = True):
        super().__init__()
        self.in_channels, self.out_channels, self.stride = check_channels_stride(in_channels, out_channels, stride)
        self.queries = positive_int(queries, "queries")
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
        if memory not in MEMORY_MODES:
            raise ValueError(f"memory must be one of {list(MEMORY_MODES)}, got {memory!r}")
        if window_conv not in STRATEGIES:
            raise ValueError(f"window_conv must be one of {list(STRATEGIES)}, got {window_conv!r}")
        self.memory, self.window_conv = memory, window_conv
        cq = out_channels // queries
        self.head_dim = cq
        self.window = math.prod(self.kernel_size)
        self.decompose = bool(decompose)
        if not self.decompose and latent_dim not in (None, 0, self.window):
            raise ValueError(f"decompose=False keeps H (M*G x M) whole: the latent width is M = {self.window}, "
                             f"got latent_dim={latent_dim!r}")
        if not self.decompose:
            self.latent_dim = self.window  # H = H1 H2^T with H2 = I (not stored)
        else:
            self.latent_dim = cq if latent_dim in (None, 0) else positive_int(latent_dim, "latent_dim")
        self.groups = cq if groups in (None, 0) else positive_int(groups, "groups")
        if cq % self.groups:
            raise ValueError(f"groups ({self.groups}) must divide the query width C_Q = "
                             f"out_channels / queries = {cq}")
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
        self.H2 = nn.Parameter(torch.empty(m, d)) if self.decompose else None  # undecomposed: H2 = I
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
                f"context={self.context_terms}, norm={self.norm!r}, stride={self.stride}, memory={self.memory!r}, "
                f"window_conv={self.window_conv!r}" + (f", l2_eps={self.l2_eps:g}" if self.l2_eps else "")
                + ("" if self.decompose else ", decompose=False"))

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
        if self.H2 is None:  # undecomposed: the latent kernel is the kernel over the window (D = M, H2 = I)
            return u.reshape(*u.shape[:-1], *self.kernel_size)  # (..., M) -> (..., t, h, w)
        kappa = torch.einsum("...d,md->...m", u, self.H2.to(u.dtype))  # (..., D) x (M, D) -> (..., M)
        return kappa.reshape(*kappa.shape[:-1], *self.kernel_size)  # (..., M) -> (..., t, h, w)

    # ----------------------------------------------------------------------------------------------
    # Efficient forward (Eq. 12). Activations are kept position-major, (B, N, ...), so that every
    # per-position product is one batched matmul over B*N small matrices and the window convs read them as
    # channels-last clips without a copy; the aggregation is :func:`rsanet.ops.rsa_core.rsa_core`.
    # ----------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, T, H, W) -> (B, C_out, T, H/s, W/s); the result is in channels-last memory format."""
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"RSA expects (B, {self.in_channels}, T, H, W), got {tuple(x.shape)}")
        b, _, t, h, w = x.shape
        device_type = x.device.type
        out_dtype = torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else x.dtype
        q, v, k = self._project(x)  # (B, N, L, C_Q) and clips (B, C_Q, T, H, W), normalized, >= float32
        factors = [None if p is None else p.to(q.dtype) for p in (self.P1, self.H1, self.H2, self.G, self.I)]
        observed = any(tap._forward_hooks or tap._forward_pre_hooks
                       for tap in (self.tap_basic_kernel, self.tap_relational_kernel))
        taps = (self.tap_basic_kernel, self.tap_relational_kernel) if observed else None
        with torch.autocast(device_type, enabled=False):
            if self.H2 is None:
                p1, h1, _, g, i = factors
                y = rsa_undecomposed(q, k, v, p1, h1, g, i, self.kernel_size, self.window_conv, taps)
            else:
                y = rsa_core(q, k, v, *factors, self.kernel_size, self.window_conv, self.memory, taps)
        # (B, N, L, C_Q) -> (B, T, H, W, C_out) -> (B, C_out, T, H, W): a channels-last view, no copy
        y = y.reshape(b, t, h, w, -1).permute(0, 4, 1, 2, 3).to(out_dtype)
        return spatial_downsample(y, self.stride)

    def _project(self, x: torch.Tensor):
        """Normalized q (B, N, L, C_Q) and value / key clips (B, C_Q, T, H, W) (key None without a relational
        kernel), each in the layout its window conv reads (:mod:`rsanet.ops.rsa_qkv`), in >= float32."""
        b, _, t, h, w = x.shape
        convs = [self.query, self.value] + ([self.key] if self.key is not None else [])
        weight = torch.cat([conv.weight for conv in convs], dim=0).flatten(1)  # (C_qvk, C_in, 1, 1, 1) -> (C_qvk, C_in)
        x5 = project(x, weight, self.head_dim)  # (B, S1, S2, L + 1 [+ 1], C_Q)
        if self.norm == "batchnorm":
            x5 = self._batchnorm(x5)
        layouts = [_layout_for(resolve_strategy(self.window_conv, x, shared=True))]
        if self.key is not None:
            layouts.append(_layout_for(resolve_strategy(self.window_conv, x, shared=False)))
        q, *clips = split_normalized(x5, self.queries, layouts, _accumulation_dtype(x5), self.norm == "l2",
                                     self.l2_eps)
        clips = [c.reshape(b, t, h, w, -1).permute(0, 4, 1, 2, 3) if lay == "positions" else
                 c.reshape(b, -1, t, h, w) for c, lay in zip(clips, layouts)]  # (B, C_Q, T, H, W)
        return q, clips[0], (clips[1] if self.key is not None else None)

    def _batchnorm(self, x5: torch.Tensor) -> torch.Tensor:
        """BatchNorm3d of q, v [, k] on channel-first views: (B, S1, S2, parts, C_Q) -> same shape."""
        L, cq = self.queries, self.head_dim
        flat = x5.flatten(3)  # (B, S1, S2, C_qvk)
        bns = [self.norm_q, self.norm_v] + ([self.norm_k] if self.key is not None else [])
        pieces = torch.split(flat, [L * cq] + [cq] * (len(bns) - 1), dim=3)
        # (B, S1, S2, C) -> (B, C, S1, S2, 1) -> BatchNorm3d -> back to (B, S1, S2, C)
        out = [bn(p.permute(0, 3, 1, 2)[..., None])[..., 0].permute(0, 2, 3, 1) for bn, p in zip(bns, pieces)]
        return torch.cat(out, dim=3).unflatten(3, x5.shape[3:])


def _layout_for(strategy: str) -> str:
    """The clip layout a window-conv strategy reads without a copy."""
    return "positions" if strategy == "channels_last" else "channels"


# ------------------------------------------------------------------------------------------------
# The table entry ``rsa`` (rsanet.ops.TRANSFORMS): its config section and builder.
# ------------------------------------------------------------------------------------------------
@dataclass
class Options:
    """``model.transform.rsa``: the RSA layer (defaults: RSANet-R50, the paper's Sec. 5.1 and Table 4)."""

    kernel_size: list[int] = field(default_factory=lambda: [5, 7, 7])  # M = t x h x w window (paper: 5x7x7)
    queries: int = 8  # L, number of queries (multi-query, Sec. 4.2); C_Q = C / L
    latent_dim: int = 0  # D, latent dim of H = H1 H2^T; 0 means C_Q / latent_divisor (paper: D = C_Q)
    latent_divisor: int = 1  # with latent_dim 0, D = C_Q / latent_divisor in every layer (Table 4b "C_Q/2": 2); ours
    decompose: bool = True  # false: H (M*G x M) and P (M x C_Q) kept whole, not H1 H2^T and H2 P1 (Table 4b "D = -")
    groups: int = 0  # G of the query-key correlation; 0 means C_Q (Hadamard product), 1 a dot product
    # kernels (Table 4a)
    kernel: list[Literal["basic", "relational"]] = field(default_factory=lambda: ["basic", "relational"])
    # contexts (Table 4a)
    context: list[Literal["basic", "relational"]] = field(default_factory=lambda: ["basic", "relational"])
    norm: Literal["l2", "none", "batchnorm"] = "l2"  # normalization of q, k and v (Table 6c)
    # L2 norm: 0 divides by max(|x|, 1e-12) (ours); > 0 by sqrt(|x|^2 + l2_eps) (the authors' code: 1e-6)
    l2_eps: float = 0.0
    # what backward keeps; same numbers either way (our choice, README "Performance"): save = q, k, v and the key
    # window conv (RSANet-R50 1.13x TSN's activations), recompute = q, k, v only (1.04x, re-runs both window convs)
    memory: Literal["save", "recompute"] = "save"
    # window-conv kernels; same numbers (our choice, rsanet/ops/channelwise_conv.py): auto = batched/channels_last
    # (oneDNN) on CPU, channels_last (cuDNN) on CUDA, native for float64
    window_conv: Literal["auto", "native", "channels_last", "batched"] = "auto"
    # init: "authors" = the authors' code (ops/ResNet.py re-inits every Conv3d of the layer with kaiming normal
    # fan_out of their shapes; ops/rsa.py draws P1 = randn*sqrt(1/(M*D))); "variance_preserving" = ours
    # (RSA.reset_parameters gives both)
    init: Literal["authors", "variance_preserving"] = "authors"  # init of the RSA factors (authors' code)


def check(options: Options, key: str) -> Optional[str]:
    """What is wrong with the ``model.transform.rsa`` keys (``key`` is that prefix), or None."""
    o = options
    problem = window_problem(o.kernel_size, f"{key}.kernel_size")
    problem = problem or terms_problem(o.kernel, f"{key}.kernel", ("basic", "relational"))
    problem = problem or terms_problem(o.context, f"{key}.context", ("basic", "relational"))
    if problem:
        return problem
    if o.queries < 1 or o.latent_dim < 0 or o.groups < 0 or o.latent_divisor < 1:
        return (f"`{key}.queries` and `{key}.latent_divisor` must be positive, `{key}.latent_dim` and `{key}.groups` "
                f">= 0 (0 means C_Q), got {o.queries}, {o.latent_divisor}, {o.latent_dim}, {o.groups}")
    if o.l2_eps < 0:
        return f"`{key}.l2_eps` must be >= 0, got {o.l2_eps}"
    if o.latent_dim and o.latent_divisor != 1:
        return f"`{key}.latent_divisor` applies when `{key}.latent_dim` is 0 (D = C_Q / divisor); set one of them"
    if not o.decompose and (o.latent_dim or o.latent_divisor != 1):
        return (f"`{key}.decompose: false` keeps H whole, so there is no latent dim D to choose: leave "
                f"`{key}.latent_dim` 0 and `{key}.latent_divisor` 1")
    return None


def build(options: Options, in_channels: int, out_channels: int, stride: int = 1) -> RSA:
    """The RSA layer of ``model.transform.rsa`` between ``in_channels`` and ``out_channels``."""
    o = options
    latent = o.latent_dim or None
    if o.decompose and not latent and o.latent_divisor != 1:
        cq = out_channels // o.queries
        if cq % o.latent_divisor:
            raise ValueError(f"model.transform.rsa.latent_divisor={o.latent_divisor} does not divide C_Q = {cq} "
                             f"(a layer of {out_channels} channels with {o.queries} queries)")
        latent = cq // o.latent_divisor
    return RSA(in_channels, out_channels, kernel_size=tuple(o.kernel_size), queries=o.queries, latent_dim=latent,
               groups=o.groups or None, kernel=tuple(o.kernel), context=tuple(o.context), norm=o.norm,
               stride=stride, l2_eps=o.l2_eps, memory=o.memory, window_conv=o.window_conv, decompose=o.decompose)


def init_weights(options: Options, module: RSA) -> None:
    """``model.transform.rsa.init``, applied once the network is initialised (a layer is built
    variance-preserving; re-drawing only when the scheme differs keeps earlier networks bit-identical)."""
    if options.init != "variance_preserving":
        module.reset_parameters(options.init)
