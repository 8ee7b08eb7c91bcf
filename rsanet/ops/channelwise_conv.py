"""Channel-wise window convolution, the workhorse of the efficient RSA (Eqs. 10 and 12).

``channelwise_window_conv(x, weight)`` convolves every channel c of x (B, C, T, H, W) with its own F window
filters weight[c*F:(c+1)*F] (a grouped conv3d with groups = C and one input channel per group), using the
window convention of :mod:`rsanet.ops.window`. The convolutions of a training step are also exposed one by
one (:func:`window_conv_forward`, :func:`window_conv_backward`) for RSA's own autograd function, which
also uses *shared* filters (F, 1, t, h, w), the same for every channel (RSA's value conv with [H2 | G]).

The result is the same whatever the strategy; strategies choose memory layouts and kernels:

* ``"native"``: the standard contiguous layout, PyTorch's own kernels. On CUDA this is the generic
  depthwise-3D kernel, whose weight gradient launches one thread block per weight element (slow); on CPU
  oneDNN in the standard layout, 2-4x slower than channels-last above 7x7 maps.
* ``"channels_last"``: channels-last (N, T, H, W, C) tensors, which RSA's position-major activations already
  are, so no layout copy is made. On CUDA every convolution goes to cuDNN. On CPU (oneDNN) the forward runs
  over chunks of at most ``_ONEDNN_CHUNK`` output channels (above that oneDNN leaves its fast kernel: 4-8x
  slower at res5), the weight gradient over chunks of at most ``_WGRAD_CHUNK`` (smaller chunks: the op 1.1-1.8x
  faster at res4/res5), and the input gradient runs as depthwise convs with the flipped filters over chunks
  of at most ``_DEPTHWISE_CHUNK`` channels, each summed over the F filters of a channel (oneDNN's own
  backward-data of this grouped conv is 10-40x slower).
* ``"batched"`` (shared filters; per-channel filters use "channels_last"): one *standard* conv3d with F
  output channels over the B*C single-channel clips (B*C, 1, T, H, W), a dense implicit-GEMM formulation
  with no repeated filters. Its forward and weight gradient are 2-7x faster than the grouped conv on 7x7
  and 4x4 maps, but it needs its output and gradient transposed to position-major (and back), which costs
  more than it saves from 14x14 up. The input gradient stays depthwise on CPU (the standard conv's own is
  5x slower); on CUDA it is the standard conv's backward.
* ``"auto"``: "native" for float64 (oneDNN and cuDNN have no float64 kernels; the reference tests run
  there); otherwise on CPU "batched" for shared filters on maps of at most ``_BATCHED_MAX_AREA`` positions
  and "channels_last" else; on CUDA "channels_last".

The choices on CPU come from interleaved measurements (README "Performance"). The choice on CUDA is made by
reasoning until measured (the README lists the command that settles it): cuDNN has real grouped-conv
kernels, the channels-last layout costs RSA no copies, and "native" hits the slow depthwise-3D kernel.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from rsanet.ops.window import window_pads

__all__ = ["channelwise_window_conv", "window_conv_forward", "window_conv_backward", "resolve_strategy",
           "STRATEGIES"]

STRATEGIES = ("auto", "native", "channels_last", "batched")
_CL = torch.channels_last_3d
_ONEDNN_CHUNK = 2048  # output channels per oneDNN forward call of the channels-last path
_WGRAD_CHUNK = 512  # output channels per oneDNN weight-gradient call (the op 1.1-1.8x faster than with 2048)
_DEPTHWISE_CHUNK = 256  # channels per depthwise conv of the input gradient on CPU (oneDNN slows down above)
_BATCHED_MAX_AREA = 100  # H*W up to which "auto" runs shared-filter convs "batched" on CPU (measured)


def resolve_strategy(strategy: str, x: torch.Tensor, shared: bool = False) -> str:
    """The concrete strategy ("native", "channels_last" or "batched") that ``strategy`` means for a window
    conv of ``x`` with per-channel (``shared`` False) or shared filters."""
    if strategy not in STRATEGIES:
        raise ValueError(f"window-conv strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    if strategy == "auto":
        if x.dtype == torch.float64:
            return "native"
        small = x.shape[-1] * x.shape[-2] <= _BATCHED_MAX_AREA
        return "batched" if shared and small and _onednn(x) else "channels_last"
    if strategy == "batched" and not shared:
        return "channels_last"  # per-channel filters have no batched form
    return strategy


def _onednn(x: torch.Tensor) -> bool:
    """Whether the CPU (oneDNN) variants of the strategies apply; otherwise the CUDA (cuDNN) ones."""
    return x.device.type == "cpu"


def _geometry(kernel_size):
    """Conv padding and explicit pads: odd windows pad symmetrically inside the conv; even ones are padded
    explicitly first (asymmetric, see rsanet.ops.window) and the conv pads nothing."""
    if all(k % 2 == 1 for k in kernel_size):
        return tuple(k // 2 for k in kernel_size), None
    return (0, 0, 0), window_pads(kernel_size)


def _layout(x: torch.Tensor, strategy: str) -> torch.Tensor:
    return x.contiguous(memory_format=_CL) if strategy == "channels_last" else x.contiguous()


def _chunks(channels: int, f: int, limit: int) -> list[tuple[int, int]]:
    """Channel ranges [c0, c1) whose (c1 - c0) * F conv channels stay within ``limit`` (at least one channel)."""
    per = max(1, limit // f)
    return [(c0, min(channels, c0 + per)) for c0 in range(0, channels, per)]


class _Filters:
    """The (c*F, 1, t, h, w) filters of a run of c channels, optionally flipped (for the input gradient).

    Per-channel filters are sliced (and flipped once for all chunks); shared (F, 1, t, h, w) filters are
    repeated once per run length, so chunks of equal length reuse them.
    """

    def __init__(self, weight: torch.Tensor, channels: int, shared: bool):
        self.weight, self.shared, self.cache = weight, shared, {}
        self.f = weight.shape[0] if shared else weight.shape[0] // channels

    def _base(self, flip: bool) -> torch.Tensor:
        if not flip:
            return self.weight
        if "flipped" not in self.cache:
            self.cache["flipped"] = self.weight.flip(-3, -2, -1)
        return self.cache["flipped"]

    def __call__(self, c0: int, c1: int, flip: bool = False) -> torch.Tensor:
        base = self._base(flip)
        if not self.shared:
            return base[c0 * self.f:c1 * self.f]
        key = (c1 - c0, flip)
        if key not in self.cache:
            self.cache[key] = base.repeat(c1 - c0, 1, 1, 1, 1)  # (F, 1, t, h, w) -> ((c1-c0)*F, 1, t, h, w)
        return self.cache[key]


def _position_major(b: int, spatial, channels: int, like: torch.Tensor) -> torch.Tensor:
    """An empty (B, T, H, W, C) buffer, returned as its channels-last (B, C, T, H, W) view."""
    return like.new_empty((b, *spatial, channels)).permute(0, 4, 1, 2, 3)


def _split_conv(x: torch.Tensor) -> bool:
    """Whether the channels-last CPU path splits this conv into channel chunks (oneDNN's fast kernel)."""
    return _onednn(x) and x.is_contiguous(memory_format=_CL)


def _conv(x: torch.Tensor, filters: _Filters, bias, padding, strategy: str) -> torch.Tensor:
    c, f = x.shape[1], filters.f
    chunks = _chunks(c, f, _ONEDNN_CHUNK) if strategy == "channels_last" and _split_conv(x) else [(0, c)]
    if len(chunks) == 1:
        return F.conv3d(x, filters(0, c), bias, padding=padding, groups=c)
    out = None
    for c0, c1 in chunks:
        part = F.conv3d(x[:, c0:c1], filters(c0, c1), None if bias is None else bias[c0 * f:c1 * f],
                        padding=padding, groups=c1 - c0)  # (B, (c1-c0)*F, T, H, W), channels-last
        if out is None:
            out = _position_major(x.shape[0], part.shape[2:], c * f, part)
        out[:, c0 * f:c1 * f].copy_(part)  # rows of (c1-c0)*F contiguous values per position
    return out  # (B, C*F, T, H, W), channels-last


def _weight_grad(grad: torch.Tensor, x: torch.Tensor, filters: _Filters, padding, strategy: str):
    c, f = x.shape[1], filters.f
    chunks = _chunks(c, f, _WGRAD_CHUNK) if strategy == "channels_last" and _split_conv(x) else [(0, c)]
    total, parts = None, []
    for c0, c1 in chunks:
        w = filters(c0, c1)
        g = torch.ops.aten.convolution_backward(grad[:, c0 * f:c1 * f], x[:, c0:c1], w, None, (1, 1, 1), padding,
                                                (1, 1, 1), False, (0, 0, 0), c1 - c0, [False, True, False])[1]
        if filters.shared:  # ((c1-c0)*F, 1, t, h, w) -> (c1-c0, F, 1, t, h, w) -> sum over the channels
            g = g.unflatten(0, (c1 - c0, f)).sum(0)
            total = g if total is None else total + g
        else:
            parts.append(g)
    if not filters.shared:
        total = parts[0] if len(parts) == 1 else torch.cat(parts, dim=0)  # one copy for all chunks
    return total  # (C*F, 1, t, h, w), or (F, 1, t, h, w) for shared filters


def _input_grad(grad: torch.Tensor, filters: _Filters, channels: int, spatial, padding):
    """Gradient with respect to the conv's input (the padded one for even windows), of size ``spatial``, on
    CPU in channels-last: grad_x[c] = sum_f conv(grad[c, f], flipped weight[c, f]) with the mirrored padding
    k - 1 - p, as depthwise convs over chunks of channels (oneDNN's fast kernel), each summed over f.
    """
    f = filters.f
    mirrored = tuple(k - 1 - p for k, p in zip(filters.weight.shape[-3:], padding))
    chunks = _chunks(channels, f, _DEPTHWISE_CHUNK)
    out = _position_major(grad.shape[0], spatial, channels, grad) if len(chunks) > 1 else None
    for c0, c1 in chunks:
        g = grad[:, c0 * f:c1 * f].contiguous(memory_format=_CL)  # (B, (c1-c0)*F, T, H, W)
        per_filter = F.conv3d(g, filters(c0, c1, flip=True), padding=mirrored, groups=(c1 - c0) * f)
        # sum over the F filters of each channel on the position-major view (a reduction over contiguous
        # rows): (B, (c1-c0)*F, T, H, W) -> (B, T, H, W, c1-c0, F) -> (B, T, H, W, c1-c0) -> (B, c1-c0, T, H, W)
        part = per_filter.permute(0, 2, 3, 4, 1).unflatten(-1, (c1 - c0, f)).sum(-1).permute(0, 4, 1, 2, 3)
        if out is None:
            return part
        out[:, c0:c1].copy_(part)
    return out  # (B, C, T, H, W), channels-last


# ------------------------------------------------------------------------------------------------
# "batched": shared filters as one standard conv over B*C single-channel clips
# ------------------------------------------------------------------------------------------------
def _batched_input(x: torch.Tensor) -> torch.Tensor:
    """(B, C, T, H, W) -> (B*C, 1, T, H, W) single-channel clips (a copy unless x is channel-first)."""
    b, c = x.shape[:2]
    return x.reshape(b * c, 1, *x.shape[2:])


def _batched_forward(x: torch.Tensor, weight: torch.Tensor, bias, padding) -> torch.Tensor:
    """Shared (F, 1, t, h, w) filters: conv3d over (B*C, 1, T, H, W) -> (B*C, F, T, H, W), then written
    position-major (B, T, H, W, C, F) (+ bias) and returned as its channels-last (B, C*F, T, H, W) view."""
    b, c = x.shape[:2]
    out = F.conv3d(_batched_input(x), weight, padding=padding)  # (B*C, F, T, H, W)
    f, spatial = out.shape[1], out.shape[2:]
    res = out.new_empty((b, *spatial, c, f))
    res.copy_(out.view(b, c, f, *spatial).permute(0, 3, 4, 5, 1, 2))  # (B, C, F, T, H, W) -> (B, T, H, W, C, F)
    if bias is not None:
        res.add_(bias.view(c, f))
    return res.view(b, *spatial, c * f).permute(0, 4, 1, 2, 3)


def _batched_weight_grad(grad: torch.Tensor, xp: torch.Tensor, weight: torch.Tensor, padding) -> torch.Tensor:
    """(F, 1, t, h, w) gradient of :func:`_batched_forward` (summed over the B*C clips by the conv itself)."""
    b, c = xp.shape[:2]
    f, spatial = weight.shape[0], grad.shape[2:]
    # (B, C*F, T, H, W) -> (B, T, H, W, C, F) -> (B, C, T, H, W, F) -> (B*C, F, T, H, W), channels-last
    g = grad.permute(0, 2, 3, 4, 1).reshape(b, *spatial, c, f).movedim(4, 1).contiguous()
    g = g.view(b * c, *spatial, f).permute(0, 4, 1, 2, 3)
    return torch.ops.aten.convolution_backward(g, _batched_input(xp), weight, None, (1, 1, 1), padding, (1, 1, 1),
                                               False, (0, 0, 0), 1, [False, True, False])[1]


def window_conv_forward(x: torch.Tensor, weight: torch.Tensor, strategy: str = "auto",
                        bias: torch.Tensor | None = None, shared: bool = False) -> torch.Tensor:
    """out[:, c*F + f](n) = sum_m weight[c*F + f, 0, m] * x[:, c](n + offset_m) (+ bias[c*F + f]), no autograd.

    x (B, C, T, H, W) in any layout; weight (C*F, 1, t, h, w), or (F, 1, t, h, w) with ``shared`` (the same
    filters for every channel), of x's dtype: (B, C*F, T, H, W), channels-last for the "channels_last"
    strategy and contiguous for "native".
    """
    strategy = resolve_strategy(strategy, x, shared)
    padding, pads = _geometry(weight.shape[-3:])
    if pads is not None:
        x = F.pad(x, pads)
    if strategy == "batched":
        return _batched_forward(x, weight, bias, padding)
    return _conv(_layout(x, strategy), _Filters(weight, x.shape[1], shared), bias, padding, strategy)


def window_conv_backward(grad: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, strategy: str = "auto",
                         need_input: bool = True, need_weight: bool = True, shared: bool = False):
    """(grad_x, grad_weight) of :func:`window_conv_forward` for the output gradient ``grad``; either may be
    None when not needed. grad_x has x's shape (channels-last for "channels_last"), grad_weight weight's."""
    strategy = resolve_strategy(strategy, x, shared)
    padding, pads = _geometry(weight.shape[-3:])
    c = x.shape[1]
    filters = _Filters(weight, c, shared)
    grad = grad.contiguous(memory_format=_CL) if strategy == "batched" else _layout(grad, strategy)
    xp = F.pad(x, pads) if pads is not None else x
    xp = xp if strategy == "batched" else _layout(xp, strategy)
    if strategy != "native" and _onednn(x):  # oneDNN: chunked or batched wgrad, depthwise igrad
        grad_w = None
        if need_weight:
            grad_w = (_batched_weight_grad(grad, xp, weight, padding) if strategy == "batched"
                      else _weight_grad(grad, xp, filters, padding, strategy))
        grad_x = _input_grad(grad, filters, c, xp.shape[2:], padding) if need_input else None
    elif strategy == "batched":  # CUDA: the standard conv's own backward
        b, spatial = x.shape[0], xp.shape[2:]
        g = grad.permute(0, 2, 3, 4, 1).reshape(b, *grad.shape[2:], c, filters.f).movedim(4, 1)
        g = g.reshape(b * c, *grad.shape[2:], filters.f).permute(0, 4, 1, 2, 3)  # (B*C, F, T, H, W)
        grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
            g, _batched_input(xp), weight, None, (1, 1, 1), padding, (1, 1, 1), False, (0, 0, 0), 1,
            [need_input, need_weight, False])
        grad_x = grad_x.reshape(b, c, *spatial) if grad_x is not None else None
    else:  # PyTorch's own backward, both gradients in one call (cuDNN for channels-last CUDA tensors)
        grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
            grad, xp, filters(0, c), None, (1, 1, 1), padding, (1, 1, 1), False, (0, 0, 0), c,
            [need_input, need_weight, False])
        if shared and grad_w is not None:  # (C*F, 1, t, h, w) -> (C, F, 1, t, h, w) -> sum over the channels
            grad_w = grad_w.unflatten(0, (c, filters.f)).sum(0)
    if grad_x is not None and pads is not None:  # gradient of the padded input -> crop back to x
        t, h, w = x.shape[2:]
        grad_x = grad_x[:, :, pads[4]:pads[4] + t, pads[2]:pads[2] + h, pads[0]:pads[0] + w]
    return grad_x, grad_w


class _WindowConv(torch.autograd.Function):
    """:func:`window_conv_forward` with the layout-aware backward of :func:`window_conv_backward`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, strategy: str) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.strategy = strategy
        return window_conv_forward(x, weight, strategy)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x, grad_w = window_conv_backward(grad, x, weight, ctx.strategy, ctx.needs_input_grad[0],
                                              ctx.needs_input_grad[1])
        return grad_x, grad_w, None


def channelwise_window_conv(x: torch.Tensor, weight: torch.Tensor, strategy: str = "auto") -> torch.Tensor:
    """out[:, c*F + f](n) = sum_m weight[c*F + f, 0, m] * x[:, c](n + offset_m): (B, C, T, H, W) -> (B, C*F, T, H, W).

    ``weight`` is (C*F, 1, t, h, w). Under autocast the convolution runs in float32 on every device (the
    partial sums of the weight gradient in a half type lose ~0.5 % median, 3 % p90 in bf16 and can overflow
    in fp16); otherwise in x's dtype. The output may be channels-last; its values do not depend on
    ``strategy``. Differentiable in x and weight.
    """
    c = x.shape[1]
    if weight.dim() != 5 or weight.shape[1] != 1 or weight.shape[0] % c:
        raise ValueError(f"weight must be (C*F, 1, t, h, w) for C = {c} channels, got {tuple(weight.shape)}")
    resolve_strategy(strategy, x)  # validate early
    if torch.is_autocast_enabled(x.device.type):
        dtype = torch.promote_types(x.dtype, torch.float32)
        x, weight = x.to(dtype), weight.to(dtype)
    else:
        weight = weight.to(x.dtype)
    with torch.autocast(x.device.type, enabled=False):  # the dtype is settled above
        if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
            return _WindowConv.apply(x, weight, strategy)
        # no backward needed: the forward without the autograd.Function (TorchScript cannot save those)
        return window_conv_forward(x, weight, strategy)
