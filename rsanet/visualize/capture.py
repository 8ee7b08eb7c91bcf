"""Dynamic kernels of one layer at one query position, read with forward hooks on the layer's kernel taps.

Nothing is recomputed here: the tensors are what the layer itself computes in its forward pass. Any layer with
kernel taps can be drawn (a tap is an ``nn.Identity`` submodule named in :data:`KERNEL_KINDS`, through which the
layer passes its kernel; a latent kernel also needs the layer's ``expand_kernel``); the built-in ones:

* :class:`~rsanet.ops.RSA`: ``tap_basic_kernel`` and ``tap_relational_kernel`` see the latent kernels
  u_V = q P1^T and u_R = q (K (*) r(H1)), (B, L, D, T, H, W); the layer's own ``expand_kernel`` turns the
  vector at the query position into the kernels kappa^V and kappa^R over the window, (L, t, h, w).
* :class:`~rsanet.ops.LocalSelfAttention`: ``tap_attention`` sees the post-softmax weights
  (B, L, M, T, H, W); the M weights at the query position, reshaped to (L, t, h, w), are its kernel.

Query positions are in the coordinates of the tapped tensors: (T, H, W) of the layer's input feature map,
before any spatial stride of the layer.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import nn

__all__ = ["KERNEL_KINDS", "KernelCapture", "kernel_layers", "default_layer", "get_kernel_layer", "parse_query",
           "capture_kernels", "mirror_query", "kernel_changes"]

# Kernel kind -> name of the tap submodule that sees it; also the drawing order (paper Fig. 3, top to bottom).
KERNEL_KINDS = {"attention": "tap_attention", "basic": "tap_basic_kernel", "relational": "tap_relational_kernel"}


@dataclass
class KernelCapture:
    """The kernels of layer ``layer`` at ``query`` for one clip, and the frames the model saw."""

    layer: str
    kernel_size: tuple[int, int, int]  # (t, h, w) of the window
    feature_shape: tuple[int, int, int]  # (T, H, W) of the tapped tensors (the layer's input, before stride)
    query: tuple[int, int, int]  # (t, h, w) position in feature_shape
    kernels: dict[str, torch.Tensor]  # kind -> (L, t, h, w) float32, in KERNEL_KINDS order
    frames: torch.Tensor  # (T_in, H_in, W_in, 3) uint8, the input frames
    reversed: bool = False  # the clip was played backwards


def _has_taps(module: nn.Module) -> bool:
    return any(isinstance(getattr(module, tap, None), nn.Module) for tap in KERNEL_KINDS.values())


def kernel_layers(model: nn.Module) -> list[str]:
    """Names (as in ``model.named_modules()``) of the layers whose kernels can be drawn, in model order."""
    return [name for name, m in model.named_modules() if _has_taps(m)]


def default_layer(model: nn.Module) -> str:
    """The first layer with a latent kernel tap (an RSA layer), else the first with an attention tap."""
    for taps in (("tap_basic_kernel", "tap_relational_kernel"), ("tap_attention",)):
        for name, m in model.named_modules():
            if any(isinstance(getattr(m, tap, None), nn.Module) for tap in taps):
                return name
    raise ValueError("the model has no layer with kernel taps, so it has no dynamic kernel to draw "
                     "(model.transform.type must be one whose layers have them: rsa or self_attention)")


def get_kernel_layer(model: nn.Module, name: str) -> nn.Module:
    """The layer called ``name``; a clear error listing the valid names otherwise."""
    valid = kernel_layers(model)
    modules = dict(model.named_modules())
    if name not in modules or not _has_taps(modules[name]):
        what = ("no module" if name not in modules
                else f"a {type(modules[name]).__name__}, not a layer with kernel taps")
        raise ValueError(f"--layer {name!r} is {what}; layers with kernels: {valid or 'none'}")
    return modules[name]


def parse_query(text: Optional[str]) -> Optional[tuple[int, int, int]]:
    """``"T,H,W"`` -> (t, h, w); None stays None (the centre)."""
    if text is None:
        return None
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 3 or not all(p.lstrip("-").isdigit() for p in parts):
        raise ValueError(f"--query must be three integers T,H,W (feature-map coordinates), got {text!r}")
    return int(parts[0]), int(parts[1]), int(parts[2])


def _check_query(query: Optional[Sequence[int]], shape: Sequence[int], layer: str) -> tuple[int, int, int]:
    if query is None:
        return shape[0] // 2, shape[1] // 2, shape[2] // 2
    query = tuple(int(q) for q in query)
    if len(query) != 3 or any(not 0 <= q < s for q, s in zip(query, shape)):
        raise ValueError(f"query {query} is outside the feature map of {layer} (T, H, W) = {tuple(shape)}; "
                         f"valid: 0..{shape[0] - 1}, 0..{shape[1] - 1}, 0..{shape[2] - 1}")
    return query  # type: ignore[return-value]


def mirror_query(query: Sequence[int], feature_shape: Sequence[int]) -> tuple[int, int, int]:
    """The same position in the time-reversed clip: t -> T - 1 - t."""
    return feature_shape[0] - 1 - query[0], query[1], query[2]


@torch.no_grad()
def _run_with_taps(model: nn.Module, layer: nn.Module, clip: torch.Tensor) -> dict[str, torch.Tensor]:
    """Forward ``clip`` (C, T, H, W) in eval mode and return what each present tap of ``layer`` saw."""
    seen: dict[str, torch.Tensor] = {}

    def keep(kind: str):
        def hook(_module, _inputs, output):
            seen[kind] = output.detach()
        return hook

    handles = [getattr(layer, tap).register_forward_hook(keep(kind))
               for kind, tap in KERNEL_KINDS.items() if isinstance(getattr(layer, tap, None), nn.Module)]
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        model(clip[None].to(device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return seen


@torch.no_grad()
def capture_kernels(model: nn.Module, layer_name: str, clip: torch.Tensor, frames: torch.Tensor,
                    query: Optional[Sequence[int]] = None, reversed: bool = False) -> KernelCapture:
    """Kernels of ``layer_name`` at ``query`` (default: the centre) for one normalized clip (C, T, H, W).

    ``frames`` (T, H, W, 3) uint8 are kept for drawing (see :func:`rsanet.inference.clip_to_frames`).
    """
    layer = get_kernel_layer(model, layer_name)
    seen = _run_with_taps(model, layer, clip)
    present = [k for k in KERNEL_KINDS if k in seen]
    if not present:
        raise RuntimeError(f"{layer_name}: no kernel tap saw a tensor during the forward pass")
    shape = tuple(seen[present[0]].shape[-3:])
    t, h, w = _check_query(query, shape, layer_name)
    kernels = {}
    for kind in present:
        vec = seen[kind][0, :, :, t, h, w]  # (1, L, D or M, T, H, W) -> (L, D) or (L, M)
        if kind == "attention":
            k = vec.reshape(vec.shape[0], *layer.kernel_size)  # (L, M) -> (L, t, h, w)
        else:
            k = layer.expand_kernel(vec, dim=1)  # (L, D) -> (L, t, h, w)
        kernels[kind] = k.detach().float().cpu()
    return KernelCapture(layer_name, tuple(layer.kernel_size), shape, (t, h, w), kernels, frames.cpu(), reversed)


def kernel_changes(a: KernelCapture, b: KernelCapture) -> dict[str, float]:
    """Relative change ||kappa_b - kappa_a|| / ||kappa_a|| of every kernel kind both captures hold."""
    out = {}
    for kind in a.kernels:
        if kind in b.kernels:
            ref = a.kernels[kind]
            out[kind] = float((b.kernels[kind] - ref).norm() / ref.norm().clamp_min(1e-12))
    return out
