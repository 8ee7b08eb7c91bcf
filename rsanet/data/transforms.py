"""Clip transforms: one crop and one flip decision for all frames of a clip.

Input is the decoder's uint8 array (T, H, W, 3); output the project's clip layout (C, T, H, W), still uint8:
DataLoader workers hand over uint8 clips (a quarter of the shared memory of float32), and the engine
normalizes them with :func:`normalize_clip` (``data.mean``/``data.std``, ImageNet) right after the copy to the
device. Geometry runs on uint8 (T, C, H, W)
tensors with ``torchvision.transforms.v2.functional`` (bilinear, antialiased resizes). Those tensors are
views of the decoder's (T, H, W, 3) memory, i.e. channels-last, which is also torch's fastest uint8 resize
path (about 4x faster than a contiguous (T, C, H, W) tensor on one thread).

* Train: resize to ``data.resize`` (240 x 320), TSN multi-scale crop (crop height and width each picked from
  ``scales`` x the short side, at most one scale step apart; sizes within 3 px of ``crop_size`` snap to it;
  the offset is one of 13 fixed grid points: corners, centre, edge middles and quarter points), resize to
  ``crop_size``, then the flip policy (:class:`FlipPolicy`) with probability 0.5.
* Test: resize to ``test.resize`` (or ``data.resize``), then the centre crop, or view ``crop`` of three crops
  along the long side (0 = left/top, 1 = centre, 2 = right/bottom) of side ``test.crop_size``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional, Sequence

import numpy as np
import torch
import torchvision.transforms.v2.functional as F

__all__ = ["FlipPolicy", "TrainTransform", "TestTransform", "multiscale_crop_box", "three_crop_boxes",
           "to_clip_tensor", "to_model_layout", "normalize_clip"]

# TSN's 13 fixed crop positions, in quarters of the free room (x, y).
_GRID = ((0, 0), (4, 0), (0, 4), (4, 4), (2, 2), (0, 2), (4, 2), (2, 4), (2, 0), (1, 1), (3, 1), (1, 3), (3, 3))


def _randint(high: int, generator: Optional[torch.Generator]) -> int:
    return int(torch.randint(0, high, (1,), generator=generator))


@dataclass
class FlipPolicy:
    """Horizontal flip with probability 0.5 under ``mode``, given the left/right class ``pairs``.

    ``none`` never flips; ``all`` flips any clip; ``skip_left_right`` never flips a paired class;
    ``swap_left_right`` flips any clip and relabels a flipped paired class to its partner.
    """

    mode: Literal["none", "all", "skip_left_right", "swap_left_right"] = "skip_left_right"
    pairs: dict[int, int] = field(default_factory=dict)

    def __post_init__(self):
        if self.mode not in ("none", "all", "skip_left_right", "swap_left_right"):
            raise ValueError(f"unknown data.flip policy {self.mode!r}")

    def decide(self, label: int, generator: Optional[torch.Generator] = None) -> tuple[bool, int]:
        """(flip?, label after the flip)."""
        if self.mode == "none" or (self.mode == "skip_left_right" and label in self.pairs):
            return False, label
        if _randint(2, generator) == 0:
            return False, label
        if self.mode == "swap_left_right":
            return True, self.pairs.get(label, label)
        return True, label


def to_clip_tensor(frames: np.ndarray) -> torch.Tensor:
    """uint8 (T, H, W, 3) array -> uint8 (T, 3, H, W) tensor."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames of shape (T, H, W, 3), got {tuple(frames.shape)}")
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # (T,H,W,3) -> (T,3,H,W)


def to_model_layout(clip: torch.Tensor) -> torch.Tensor:
    """uint8 (T, 3, H, W) -> contiguous uint8 (3, T, H, W), the clip layout of dataset items."""
    return clip.permute(1, 0, 2, 3).contiguous()  # (T,3,H,W) -> (3,T,H,W)


def normalize_clip(clip: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 clips (..., 3, T, H, W) -> float32 ``(x / 255 - mean) / std`` per channel, on the clip's device.

    The engine calls it right after the host-to-device copy of a batch, and the inference tools on their
    clips, so every consumer feeds the model the same values. Per channel: one conversion, then an in-place
    ``x * (1 / (255 std)) + (-mean / std)`` with float32 constants passed as Python scalars (no small tensor
    is copied to the device, which would wait for the GPU). The result is bitwise the same on CPU and GPU.
    """
    if clip.dtype != torch.uint8:
        raise TypeError(f"normalize_clip expects uint8 clips (DESIGN.md, \"Samples\"), got {clip.dtype}")
    if clip.dim() < 4 or clip.shape[-4] != len(mean) or len(mean) != len(std):
        raise ValueError(f"expected clips (..., {len(mean)}, T, H, W), got {tuple(clip.shape)}")
    m, s = torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64)
    scale = (1.0 / (255.0 * s)).float().tolist()  # (3,) float32 values as Python floats (exact)
    bias = (-m / s).float().tolist()  # (3,)
    out = clip.to(torch.float32)
    for c in range(len(scale)):
        out.select(-4, c).mul_(scale[c]).add_(bias[c])  # channel c: (..., T, H, W)
    return out


def _resize(clip: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(clip.shape[-2:]) == tuple(size):
        return clip
    return F.resize(clip, list(size), antialias=True)


def multiscale_crop_box(height: int, width: int, crop_size: int, scales: Sequence[float],
                        generator: Optional[torch.Generator] = None, max_distort: int = 1) -> tuple[int, int, int, int]:
    """(top, left, crop height, crop width) of a TSN multi-scale crop (see the module doc)."""
    base = min(height, width)
    sizes = [int(base * s) for s in scales]
    sizes = [crop_size if abs(s - crop_size) < 3 else s for s in sizes]
    pairs = [(sizes[i], sizes[j]) for i in range(len(sizes)) for j in range(len(sizes)) if abs(i - j) <= max_distort]
    ch, cw = pairs[_randint(len(pairs), generator)]
    qx, qy = _GRID[_randint(len(_GRID), generator)]
    return qy * (height - ch) // 4, qx * (width - cw) // 4, ch, cw


def three_crop_boxes(height: int, width: int, size: int) -> list[tuple[int, int]]:
    """(top, left) of three ``size`` crops along the long side: start, centre, end."""
    if size > height or size > width:
        raise ValueError(f"crop size {size} is larger than the resized frame {height}x{width}")
    if width >= height:
        top = int(round((height - size) / 2.0))
        return [(top, 0), (top, int(round((width - size) / 2.0))), (top, width - size)]
    left = int(round((width - size) / 2.0))
    return [(0, left), (int(round((height - size) / 2.0)), left), (height - size, left)]


class TrainTransform:
    """Resize, TSN multi-scale crop, flip policy: (T, H, W, 3) uint8 -> (C, T, S, S) uint8."""

    def __init__(self, resize: Sequence[int], crop_size: int, scales: Sequence[float], flip: FlipPolicy):
        if crop_size > min(resize):
            raise ValueError(f"data.crop_size {crop_size} is larger than the short side of data.resize {list(resize)}")
        self.resize, self.crop_size, self.scales = list(resize), crop_size, list(scales)
        self.flip = flip

    def __call__(self, frames: np.ndarray, label: int, crop: int = 0,
                 generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, int]:
        clip = _resize(to_clip_tensor(frames), self.resize)
        top, left, h, w = multiscale_crop_box(clip.shape[-2], clip.shape[-1], self.crop_size, self.scales, generator)
        clip = F.resized_crop(clip, top, left, h, w, [self.crop_size, self.crop_size], antialias=True)
        flip, label = self.flip.decide(label, generator)
        if flip:
            clip = F.horizontal_flip(clip)
        return to_model_layout(clip), label


class TestTransform:
    """Resize, then the centre crop or crop ``crop`` of three: (T, H, W, 3) uint8 -> (C, T, S, S) uint8.
    Deterministic."""

    __test__ = False  # not a pytest test class

    def __init__(self, resize: Sequence[int], crop_size: int, crops: int):
        if crops not in (1, 3):
            raise ValueError(f"test.crops must be 1 or 3, got {crops}")
        if crop_size > min(resize):
            raise ValueError(f"test crop size {crop_size} is larger than the short side of the resize {list(resize)}")
        self.resize, self.crop_size, self.crops = list(resize), crop_size, crops

    def __call__(self, frames: np.ndarray, label: int, crop: int = 0,
                 generator: Optional[torch.Generator] = None) -> tuple[torch.Tensor, int]:
        clip = _resize(to_clip_tensor(frames), self.resize)
        s = self.crop_size
        if self.crops == 1:
            clip = F.center_crop(clip, [s, s])
        else:
            top, left = three_crop_boxes(clip.shape[-2], clip.shape[-1], s)[crop]
            clip = F.crop(clip, top, left, s, s)
        return to_model_layout(clip), label
