"""Channel-wise window convolution, the workhorse of the efficient RSA (Eqs. 10 and 12).

``channelwise_window_conv(x, weight)`` convolves every channel c of x (B, C, T, H, W) with its own F window
filters weight[c*F:(c+1)*F] (a grouped conv3d with groups = C and one input channel per group), using the
window convention of :mod:`rsanet.ops.window`. The result is the same whatever the strategy; strategies only
choose memory layouts for the three convolutions of forward and backward:

* ``"native"``: one F.conv3d in the standard contiguous layout, autograd's own backward.
* ``"channels_last"``: forward and weight gradient in channels-last (N, T, H, W, C) layout; the input
  gradient as depthwise convs with the flipped filters over chunks of at most 256 channels, each followed
  by a sum over the F filters of a channel. With oneDNN on CPU this is 1.5-7x faster than "native" for the
  RSANet stage shapes with H*W >= 14*14, while for tiny spatial sizes (7x7) "native" is faster.
* ``"auto"``: "channels_last" on CPU for float32/bfloat16 inputs with H*W >= 100, "native" otherwise
  (CUDA, float64, small maps).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from rsanet.ops.window import window_pad

__all__ = ["channelwise_window_conv", "STRATEGIES"]

STRATEGIES = ("auto", "native", "channels_last")
_CL = torch.channels_last_3d
_DEPTHWISE_CHUNK = 256  # channels per depthwise conv of the input gradient (oneDNN slows down above this)
_CHANNELS_LAST_MIN_AREA = 100  # H*W from which "auto" uses channels-last on CPU


def _input_grad(grad: torch.Tensor, weight: torch.Tensor, channels: int, padding) -> torch.Tensor:
    """Data gradient of the grouped conv: grad_x[c] = sum_f conv(grad[c, f], flipped weight[c, f]).

    Computed as depthwise convs (mirrored padding k - 1 - p) over chunks of at most
    ``_DEPTHWISE_CHUNK`` channels, where oneDNN's depthwise kernel runs at full speed, then summed over f.
    """
    f = weight.shape[0] // channels
    per_chunk = max(1, _DEPTHWISE_CHUNK // f)  # input channels per chunk
    mirrored = tuple(k - 1 - p for k, p in zip(weight.shape[-3:], padding))
    flipped = weight.flip(-3, -2, -1)
    parts = []
    for c0 in range(0, channels, per_chunk):
        c1 = min(channels, c0 + per_chunk)
        g = grad[:, c0 * f:c1 * f].contiguous(memory_format=_CL)  # (B, (c1-c0)*F, T, H, W)
        per_filter = F.conv3d(g, flipped[c0 * f:c1 * f], padding=mirrored, groups=(c1 - c0) * f)
        # (B, (c1-c0)*F, T, H, W) -> (B, c1-c0, F, T, H, W) -> sum over F -> (B, c1-c0, T, H, W)
        parts.append(per_filter.unflatten(1, (c1 - c0, f)).sum(2))
    return torch.cat(parts, dim=1)  # (B, C, T, H, W)


class _ChannelsLastWindowConv(torch.autograd.Function):
    """Grouped conv3d (groups = C, 1 input channel each) with layout-aware forward and backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, padding: tuple[int, int, int]) -> torch.Tensor:
        x = x.contiguous(memory_format=_CL)
        ctx.save_for_backward(x, weight)
        ctx.padding = padding
        return F.conv3d(x, weight, padding=padding, groups=x.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        c = x.shape[1]
        pad = ctx.padding
        grad_x = grad_w = None
        if ctx.needs_input_grad[1]:
            grad_w = torch.ops.aten.convolution_backward(
                grad.contiguous(memory_format=_CL), x, weight, None, (1, 1, 1), pad, (1, 1, 1), False, (0, 0, 0),
                c, [False, True, False])[1]
        if ctx.needs_input_grad[0]:
            grad_x = _input_grad(grad, weight, c, pad)
        return grad_x, grad_w, None


def _choose(x: torch.Tensor, strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {list(STRATEGIES)}, got {strategy!r}")
    if strategy != "auto":
        return strategy
    fast_cpu = x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16)
    return "channels_last" if fast_cpu and x.shape[-1] * x.shape[-2] >= _CHANNELS_LAST_MIN_AREA else "native"


def channelwise_window_conv(x: torch.Tensor, weight: torch.Tensor, strategy: str = "auto") -> torch.Tensor:
    """out[:, c*F + f](n) = sum_m weight[c*F + f, 0, m] * x[:, c](n + offset_m): (B, C, T, H, W) -> (B, C*F, T, H, W).

    ``weight`` is (C*F, 1, t, h, w). Under autocast both operands are cast to the autocast dtype first, as
    F.conv3d would, except on CPU where the conv stays in float32 (faster there, see the comment below).
    The output may be channels-last; its values do not depend on ``strategy``.
    """
    c = x.shape[1]
    if weight.dim() != 5 or weight.shape[1] != 1 or weight.shape[0] % c:
        raise ValueError(f"weight must be (C*F, 1, t, h, w) for C = {c} channels, got {tuple(weight.shape)}")
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        # On CPU these depthwise-style convs run no faster in bf16 than in fp32 with oneDNN, and their
        # weight gradient runs 2-4x slower, so they stay in fp32 there; on GPUs they use the autocast dtype.
        dtype = torch.float32 if device_type == "cpu" else torch.get_autocast_dtype(device_type)
        x, weight = x.to(dtype), weight.to(dtype)
    else:
        weight = weight.to(x.dtype)
    kernel_size = tuple(weight.shape[-3:])
    if all(k % 2 == 1 for k in kernel_size):
        padding = tuple(k // 2 for k in kernel_size)
    else:  # even sizes: pad asymmetrically first (see rsanet.ops.window), then no conv padding
        x, padding = window_pad(x, kernel_size), (0, 0, 0)
    with torch.autocast(device_type, enabled=False):  # the dtype is settled above
        if _choose(x, strategy) == "native":
            # standard layout: oneDNN's backward of this grouped conv is very slow for channels-last inputs
            return F.conv3d(x.contiguous(), weight, padding=padding, groups=c)
        if torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad):
            return _ChannelsLastWindowConv.apply(x, weight, padding)
        # no backward needed: the same forward without the autograd.Function (TorchScript cannot save those)
        return F.conv3d(x.contiguous(memory_format=_CL), weight, padding=padding, groups=c)
