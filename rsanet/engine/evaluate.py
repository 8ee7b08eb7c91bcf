"""Multi-view evaluation: per-sample softmax scores (and raw logits), gathered from all ranks by sample index
(the padding duplicates of the distributed sampler dropped), averaged per video, then the metrics."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
from torch import nn

from rsanet.config import Config
from rsanet.dist import DistContext, all_gather_tensor
from rsanet.engine.loaders import check_bad_fraction, to_device
from rsanet.engine.train import autocast
from rsanet.metrics import average_views, compute_metrics

__all__ = ["EvalResult", "evaluate", "video_ids_of"]


@dataclass
class EvalResult:
    """Per-video results (identical on every rank) and their metrics."""

    video_ids: list[str]
    labels: np.ndarray  # (V,) int64, -1 = unknown
    scores: np.ndarray  # (V, K) float32, mean softmax over views
    views: np.ndarray  # (V,) int64, views averaged per video
    metrics: dict  # top1, top5, mean_class_accuracy (percent), num_videos, num_labelled, views
    logits: Optional[np.ndarray] = None  # (V, K) float32, mean logits over views (the authors' score files hold logits)


def video_ids_of(dataset) -> list[str]:
    """Video id strings of a dataset: ``dataset.video_ids``, else the ``video_id`` of ``dataset.records``,
    else the video index as a string."""
    ids = getattr(dataset, "video_ids", None)
    if ids is None and getattr(dataset, "records", None) is not None:
        ids = [r.video_id or r.path for r in dataset.records]
    if ids is None or len(ids) != dataset.num_videos:
        ids = [str(i) for i in range(dataset.num_videos)]
    return [str(i) for i in ids]


@torch.no_grad()
def _predict(model: nn.Module, loader, cfg: Config, ctx: DistContext, bar=None) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's ``meta (S, 4) int64 = [index, video, label, replaced]`` on the host and ``scores (S, 2K)
    float32`` on the device: softmax probabilities, then the logits. Nothing is read back per batch: the
    scores stay on the device until the gather, so the host queues batch after batch without waiting."""
    metas, scores = [], []
    for batch in loader:
        clip, _ = to_device(batch, ctx.device, cfg.data.mean, cfg.data.std)
        with autocast(cfg, ctx.device):
            logits = model(clip)
        logits = logits.float()
        scores.append(torch.cat([torch.softmax(logits, dim=1), logits], dim=1))  # (B, K) + (B, K) -> (B, 2K)
        metas.append(torch.stack([torch.as_tensor(batch[k]).long() for k in ("index", "video", "label", "replaced")],
                                 dim=1))  # (B, 4), host
        if bar is not None:
            bar.update(1)
    return torch.cat(metas), torch.cat(scores)


def evaluate(model: nn.Module, loader, dataset, cfg: Config, ctx: DistContext, split: str = "val",
             bar=None) -> EvalResult:
    """Scores of every video of ``dataset`` (the loader's sampler shards it over ranks, padded)."""
    model.eval()
    meta, scores = _predict(model, loader, cfg, ctx, bar)
    # one gather each (on the device for NCCL), then one copy to the host: (world * S, ...)
    meta, scores = all_gather_tensor(meta).numpy(), all_gather_tensor(scores).numpy()
    probs, logits = np.split(scores, 2, axis=1)  # (world * S, 2K) -> 2 x (world * S, K)
    _, first = np.unique(meta[:, 0], return_index=True)
    check_bad_fraction(float(meta[first, 3].sum()), float(len(first)), cfg.data.max_bad_fraction, split)
    if len(first) != len(dataset):
        raise RuntimeError(f"{split}: scored {len(first)} distinct samples but the dataset has {len(dataset)}")
    scores, labels, views = average_views(meta[:, 0], meta[:, 1], meta[:, 2], probs, dataset.num_videos)
    mean_logits = average_views(meta[:, 0], meta[:, 1], meta[:, 2], logits, dataset.num_videos)[0]
    metrics = compute_metrics(scores, labels, views=getattr(dataset, "num_views", int(views.max())))
    return EvalResult(video_ids_of(dataset), labels, scores, views, metrics, mean_logits)


def format_metrics(metrics: dict) -> str:
    """``top1 51.90 top5 79.60 mean-class 48.20 (11522 videos x 1 views)``."""
    def pct(v: Optional[float]) -> str:
        return "n/a" if v is None else f"{v:.2f}"
    views = f"{metrics['views']} view" + ("" if metrics["views"] == 1 else "s")
    return (f"top1 {pct(metrics['top1'])} top5 {pct(metrics['top5'])} mean-class {pct(metrics['mean_class_accuracy'])} "
            f"({metrics['num_videos']} videos x {views})")
