"""The local spatio-temporal window (the M-neighbourhood) shared by every local transform.

A window of size (t, h, w) has M = t*h*w offsets. Along an axis of size k the offsets run from -(k // 2) to
(k - 1) // 2, so odd sizes are centred and even sizes reach one step further back than forward. Positions
outside the clip read zeros. Offsets are numbered row-major, m = (i_t * h + i_h) * w + i_w, which is also
the layout of a conv3d weight (..., t, h, w). The fast paths (convolutions) and the literal references
(explicit unfolding) both use these helpers, so they agree on the convention by construction.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["check_kernel_size", "window_pads", "window_pad", "window_conv3d", "unfold_window",
           "window_valid_mask", "spatial_downsample"]


def check_kernel_size(kernel_size: int | Sequence[int], name: str = "kernel_size",
                      odd: bool = False) -> tuple[int, int, int]:
    """Validate a (t, h, w) window size (an int means a cube) and return it as a tuple of three ints."""
    if isinstance(kernel_size, int) and not isinstance(kernel_size, bool):
        kernel_size = (kernel_size,) * 3
    try:
        sizes = tuple(kernel_size)
    except TypeError:
        raise ValueError(f"{name} must be an int or three ints (t, h, w), got {kernel_size!r}") from None
    if len(sizes) != 3 or not all(isinstance(k, int) and not isinstance(k, bool) for k in sizes):
        raise ValueError(f"{name} must be three ints (t, h, w), got {kernel_size!r}")
    if any(k < 1 for k in sizes):
        raise ValueError(f"{name} must be positive, got {kernel_size!r}")
    if odd and any(k % 2 == 0 for k in sizes):
        raise ValueError(f"{name} must be odd along every axis for this transform, got {kernel_size!r}")
    return sizes  # type: ignore[return-value]


def window_pads(kernel_size: Sequence[int]) -> tuple[int, ...]:
    """F.pad amounts (w_before, w_after, h_before, h_after, t_before, t_after) of the window convention."""
    t, h, w = kernel_size
    return (w // 2, (w - 1) // 2, h // 2, (h - 1) // 2, t // 2, (t - 1) // 2)


def window_pad(x: torch.Tensor, kernel_size: Sequence[int]) -> torch.Tensor:
    """Zero-pad (B, C, T, H, W) so that every window of ``kernel_size`` fits: (B, C, T+t-1, H+h-1, W+w-1)."""
    return F.pad(x, window_pads(kernel_size))


def window_conv3d(x: torch.Tensor, weight: torch.Tensor, groups: int = 1,
                  bias: torch.Tensor | None = None) -> torch.Tensor:
    """conv3d over the window: out[n] = sum_m weight[..., m] * x[n + offset_m], zeros outside the clip.

    x (B, C_in, T, H, W), weight (C_out, C_in / groups, t, h, w) -> (B, C_out, T, H, W). Odd sizes use the
    convolution's own symmetric padding (no copy); even sizes pad explicitly first.
    """
    kernel_size = tuple(weight.shape[-3:])
    if all(k % 2 == 1 for k in kernel_size):
        return F.conv3d(x, weight, bias, padding=tuple(k // 2 for k in kernel_size), groups=groups)
    return F.conv3d(window_pad(x, kernel_size), weight, bias, groups=groups)


def unfold_window(x: torch.Tensor, kernel_size: Sequence[int]) -> torch.Tensor:
    """The explicit neighbourhood of every position: (B, C, T, H, W) -> (B, C, T, H, W, M).

    Entry [..., n, m] is x at position n + offset_m (zero outside). This materializes B*C*N*M values, so it
    is only for literal references and the self-attention baseline.
    """
    b, c, t, h, w = x.shape
    kt, kh, kw = kernel_size
    # (B, C, T+kt-1, H+kh-1, W+kw-1) -> (B, C, T, H, W, kt, kh, kw): a strided view, no copy yet.
    windows = window_pad(x, kernel_size).unfold(2, kt, 1).unfold(3, kh, 1).unfold(4, kw, 1)
    # (B, C, T, H, W, kt, kh, kw) -> (B, C, T, H, W, M): this reshape copies.
    return windows.reshape(b, c, t, h, w, kt * kh * kw)


def window_valid_mask(shape: Sequence[int], kernel_size: Sequence[int], device=None) -> torch.Tensor:
    """Boolean (M, T, H, W): True where offset m of position (t, h, w) falls inside a clip of ``shape``."""
    t, h, w = shape
    ones = torch.ones(1, 1, t, h, w, device=device)
    # (1, 1, T, H, W, M) -> (T, H, W, M) -> (M, T, H, W)
    inside = unfold_window(ones, kernel_size)[0, 0].permute(3, 0, 1, 2)
    return inside > 0.5


def spatial_downsample(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Average over stride x stride spatial cells after a transform: (B, C, T, H, W) -> (B, C, T, H/s, W/s).

    A channels-last clip stays channels-last: it is pooled as its (B*T, C, H, W) frames, a view.
    """
    if stride == 1:
        return x
    b, c, t, h, w = x.shape
    if x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous():
        # (B, C, T, H, W) -> (B, T, C, H, W) -> (B*T, C, H, W) channels-last frames -> pool -> back
        frames = F.avg_pool2d(x.transpose(1, 2).reshape(b * t, c, h, w), stride, stride)
        return frames.reshape(b, t, c, *frames.shape[2:]).transpose(1, 2)
    return F.avg_pool3d(x, kernel_size=(1, stride, stride), stride=(1, stride, stride))
