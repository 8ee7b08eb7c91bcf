"""Class predictions for single video files or frame folders (``tools/predict.py``).

A video's score is the softmax averaged over its test-time views (``test.clips`` x ``test.crops``), as in
``tools/test.py``. Unreadable inputs do not stop a run: :func:`predict_paths` yields an error for that path
and goes on with the next.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import torch
from torch import nn

from rsanet.config import Config
from rsanet.inference import video_views

__all__ = ["Prediction", "predict_views", "top_k", "predict_paths", "format_prediction"]


@dataclass
class Prediction:
    """Result for one input: ``top`` holds (class name, probability) pairs, best first; or ``error``."""

    path: str
    top: list[tuple[str, float]]
    views: int = 0
    error: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.error is None


@torch.no_grad()
def predict_views(model: nn.Module, views: torch.Tensor, batch_size: int = 8) -> torch.Tensor:
    """Mean softmax over the views (V, C, T, H, W) of one video: (num_classes,) float32 probabilities."""
    device = next(model.parameters()).device
    probs = [torch.softmax(model(chunk.to(device)).float(), dim=1).cpu() for chunk in views.split(batch_size)]
    return torch.cat(probs).mean(dim=0)


def top_k(probs: torch.Tensor, classes: Sequence[str], k: int = 5) -> list[tuple[str, float]]:
    """The ``k`` most probable (class name, probability) pairs, best first (ties: lower class index first)."""
    if probs.dim() != 1 or probs.numel() != len(classes):
        raise ValueError(f"expected {len(classes)} class probabilities, got shape {tuple(probs.shape)}")
    values, indices = torch.topk(probs, min(k, len(classes)), sorted=True)
    return [(classes[i], float(v)) for v, i in zip(values.tolist(), indices.tolist())]


def predict_paths(model: nn.Module, cfg: Config, paths: Sequence[str | os.PathLike], classes: Sequence[str],
                  k: int = 5) -> Iterator[Prediction]:
    """One :class:`Prediction` per path, in order; a path that cannot be read gives one with ``error`` set."""
    model.eval()
    for path in paths:
        try:
            views = video_views(cfg, path, classes)
        except Exception as e:  # any decoding failure: report it and go on with the next input
            yield Prediction(str(path), [], error=f"{type(e).__name__}: {e}")
            continue
        yield Prediction(str(path), top_k(predict_views(model, views, cfg.test.batch_size), classes, k), len(views))


def format_prediction(pred: Prediction) -> str:
    """Text block of one prediction: the path, then one ``rank. probability  name`` line per class."""
    if not pred.ok:
        return f"{pred.path}: cannot be read: {pred.error}"
    lines = [f"{pred.path} ({pred.views} view{'s' if pred.views != 1 else ''})"]
    lines += [f"  {rank}. {prob:.4f}  {name}" for rank, (name, prob) in enumerate(pred.top, 1)]
    return "\n".join(lines)
