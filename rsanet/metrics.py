"""Classification metrics and per-video score files.

Metrics are computed from per-video score vectors (softmax averaged over the views of a video):

- ``top1`` / ``top5``: percent of videos whose label is among the k highest scores (k is clipped to the
  number of classes);
- ``mean_class_accuracy``: the mean over ground-truth classes of diag / row-sum of the confusion matrix, in
  percent (FineGym's metric). A class that appears only among the predictions does not count.

Videos without a label (label -1, e.g. an official test split) are left out of every metric.

:func:`per_class_report` breaks the top-1 accuracy down by ground-truth class (accuracy, support, what each
class is mistaken for) and lists the most frequent confusions over all classes.

Score files (``scores.npz``, read back with :func:`load_scores`) hold one row per video:
``video_ids`` (str), ``labels`` (int64, -1 = unknown), ``scores`` (float32, videos x classes, the mean
softmax over views) and ``views`` (int64, how many views were averaged), plus ``classes`` (str) when known and
``logits`` (float32, videos x classes, the mean raw logits over views; with one view these are the numbers
the authors' ``main.py -e`` saves in ``score_240c1.pt``) when the writer had them.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from rsanet.storage import storage_error

__all__ = ["topk_accuracy", "confusion_matrix", "mean_class_accuracy", "compute_metrics", "per_class_report",
           "average_views", "save_scores", "load_scores", "ensemble_scores"]


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, labels = np.asarray(scores), np.asarray(labels, dtype=np.int64)
    if scores.ndim != 2 or labels.ndim != 1 or len(scores) != len(labels):
        raise ValueError(f"scores must be (N, K) and labels (N,), got {scores.shape} and {labels.shape}")
    if len(labels) and (labels.min() < 0 or labels.max() >= scores.shape[1]):
        raise ValueError(f"labels must be in [0, {scores.shape[1]}), got range [{labels.min()}, {labels.max()}]")
    return scores, labels


def topk_accuracy(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Percent of rows whose label is among the ``k`` highest scores (ties broken by class index)."""
    scores, labels = _check(scores, labels)
    if len(labels) == 0:
        return float("nan")
    k = min(k, scores.shape[1])
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # (N, k) class indices, best first
    hit = (order == labels[:, None]).any(axis=1)
    return float(hit.mean() * 100.0)


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """``(num_classes, num_classes)`` counts; row = ground truth, column = prediction."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)), 1)
    return cm


def mean_class_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mean over ground-truth classes of the per-class recall, in percent."""
    scores, labels = _check(scores, labels)
    if len(labels) == 0:
        return float("nan")
    cm = confusion_matrix(scores.argmax(axis=1), labels, scores.shape[1])
    rows = cm.sum(axis=1)
    present = rows > 0  # ground-truth classes only
    return float((np.diag(cm)[present] / rows[present]).mean() * 100.0)


def compute_metrics(scores: np.ndarray, labels: np.ndarray, views: int = 1) -> dict:
    """``top1``, ``top5``, ``mean_class_accuracy`` (percent) over labelled videos, ``num_videos``, ``views``.

    ``num_videos`` counts every video scored; ``num_labelled`` those the accuracies are over.
    """
    scores, labels = np.asarray(scores), np.asarray(labels, dtype=np.int64)
    known = labels >= 0
    s, y = scores[known], labels[known]
    return {
        "top1": topk_accuracy(s, y, 1) if len(y) else None,
        "top5": topk_accuracy(s, y, 5) if len(y) else None,
        "mean_class_accuracy": mean_class_accuracy(s, y) if len(y) else None,
        "num_videos": int(len(labels)),
        "num_labelled": int(known.sum()),
        "views": int(views),
    }


def per_class_report(scores: np.ndarray, labels: np.ndarray, classes: Optional[Sequence[str]] = None,
                     pairs: int = 20, per_class_pairs: int = 3) -> dict:
    """Top-1 results per ground-truth class over the labelled videos (label >= 0) of ``scores`` (N, K).

    Returns ``{"num_labelled", "confusion_matrix" (K x K counts; row = truth, column = prediction),
    "classes": [{"index", "name", "support", "correct", "accuracy" (percent, None without support),
    "confused_with": [{"index", "name", "count"}, ...]} per class], "most_confused": [{"true", "true_name",
    "predicted", "predicted_name", "count", "percent_of_true"}, ...]}``; confusions are sorted by count (then
    class index), the ``pairs`` largest overall and the ``per_class_pairs`` largest per class.
    """
    scores, labels = np.asarray(scores), np.asarray(labels, dtype=np.int64)
    known = labels >= 0
    s, y = _check(scores[known], labels[known])
    k = scores.shape[1]
    names = list(classes) if classes is not None and len(classes) == k else [str(i) for i in range(k)]
    cm = confusion_matrix(s.argmax(axis=1), y, k)
    support = cm.sum(axis=1)
    off = cm.copy()
    np.fill_diagonal(off, 0)

    def largest(counts: np.ndarray, n: int) -> list[int]:  # indices of the n largest positive counts
        order = np.lexsort((np.arange(counts.size), -counts.ravel()))
        return [int(i) for i in order[:n] if counts.ravel()[i] > 0]

    rows = []
    for c in range(k):
        rows.append({"index": c, "name": names[c], "support": int(support[c]), "correct": int(cm[c, c]),
                     "accuracy": float(100.0 * cm[c, c] / support[c]) if support[c] else None,
                     "confused_with": [{"index": j, "name": names[j], "count": int(off[c, j])}
                                       for j in largest(off[c], per_class_pairs)]})
    confused = []
    for flat in largest(off, pairs):
        t, p = divmod(flat, k)
        confused.append({"true": t, "true_name": names[t], "predicted": p, "predicted_name": names[p],
                         "count": int(off[t, p]), "percent_of_true": float(100.0 * off[t, p] / support[t])})
    return {"num_labelled": int(known.sum()), "confusion_matrix": cm.tolist(), "classes": rows,
            "most_confused": confused}


def average_views(sample_index: np.ndarray, video: np.ndarray, label: np.ndarray, probs: np.ndarray,
                  num_videos: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean score per video from per-view scores that may contain duplicated samples.

    ``sample_index``, ``video`` and ``label`` are (S,), ``probs`` (S, K). Rows with the same sample index
    (the padding of a distributed sampler) count once. Returns ``(scores (V, K) float32, labels (V,),
    views (V,))`` for videos ``0 .. num_videos-1``; a video with no view raises.
    """
    sample_index = np.asarray(sample_index, dtype=np.int64)
    _, first = np.unique(sample_index, return_index=True)  # first row of each distinct sample, by index
    video = np.asarray(video, dtype=np.int64)[first]
    label = np.asarray(label, dtype=np.int64)[first]
    probs = np.asarray(probs, dtype=np.float64)[first]
    if len(video) and (video.min() < 0 or video.max() >= num_videos):
        raise ValueError(f"video index out of range [0, {num_videos}): {video.min()}..{video.max()}")
    sums = np.zeros((num_videos, probs.shape[1]), dtype=np.float64)
    np.add.at(sums, video, probs)
    counts = np.bincount(video, minlength=num_videos)
    if (counts == 0).any():
        missing = np.flatnonzero(counts == 0)[:5].tolist()
        raise ValueError(f"{int((counts == 0).sum())} videos have no scored view (e.g. videos {missing})")
    labels = np.full(num_videos, -2, dtype=np.int64)
    labels[video] = label
    check = np.full(num_videos, -2, dtype=np.int64)
    check[video[::-1]] = label[::-1]
    if (labels != check).any():
        bad = int(np.flatnonzero(labels != check)[0])
        raise ValueError(f"views of video {bad} disagree on its label")
    return (sums / counts[:, None]).astype(np.float32), labels, counts.astype(np.int64)


def save_scores(path: str | os.PathLike, video_ids: Sequence[str], labels: np.ndarray, scores: np.ndarray,
                views: np.ndarray, classes: Optional[Sequence[str]] = None,
                logits: Optional[np.ndarray] = None) -> Path:
    """Write a per-video score file (``.npz``, see the module docstring) atomically; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"video_ids": np.asarray([str(v) for v in video_ids], dtype=str),
              "labels": np.asarray(labels, dtype=np.int64), "scores": np.asarray(scores, dtype=np.float32),
              "views": np.asarray(views, dtype=np.int64)}
    if classes is not None:
        arrays["classes"] = np.asarray(list(classes), dtype=str)
    if logits is not None:
        arrays["logits"] = np.asarray(logits, dtype=np.float32)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise storage_error(path, e) from None
    return path


def load_scores(path: str | os.PathLike) -> dict:
    """Read a score file written by :func:`save_scores` (no pickle) into a dict of arrays."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"score file not found: {path}")
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    for key in ("video_ids", "labels", "scores"):
        if key not in data:
            raise ValueError(f"{path}: not an RSANet score file (no `{key}` array)")
    return data


def ensemble_scores(paths: Sequence[str | os.PathLike], weights: Optional[Sequence[float]] = None) -> dict:
    """Weighted mean of several score files of the same videos (e.g. the 8f and 16f models of Table 3).

    Videos are matched by id (the order may differ); ids and labels must agree across files. Returns a dict
    like :func:`load_scores` in the order of the first file, ``views`` summed.
    """
    if not paths:
        raise ValueError("no score files given")
    weights = [1.0] * len(paths) if weights is None else [float(w) for w in weights]
    if len(weights) != len(paths):
        raise ValueError(f"{len(weights)} weights for {len(paths)} score files")
    base = load_scores(paths[0])
    ids = base["video_ids"]
    total = base["scores"].astype(np.float64) * weights[0]
    views = base.get("views", np.ones(len(ids), dtype=np.int64)).copy()
    for path, w in zip(paths[1:], weights[1:]):
        other = load_scores(path)
        if set(other["video_ids"].tolist()) != set(ids.tolist()) or len(other["video_ids"]) != len(ids):
            raise ValueError(f"{path} scores other videos than {paths[0]} "
                             f"({len(other['video_ids'])} vs {len(ids)} videos)")
        if other["scores"].shape[1] != total.shape[1]:
            raise ValueError(f"{path} has {other['scores'].shape[1]} classes, {paths[0]} {total.shape[1]}")
        pos = {v: i for i, v in enumerate(other["video_ids"].tolist())}
        order = np.asarray([pos[v] for v in ids.tolist()], dtype=np.int64)
        if (other["labels"][order] != base["labels"]).any():
            bad = ids[np.flatnonzero(other["labels"][order] != base["labels"])[0]]
            raise ValueError(f"{path} and {paths[0]} disagree on the label of video {bad}")
        total += other["scores"][order].astype(np.float64) * w
        views += other.get("views", np.ones(len(ids), dtype=np.int64))[order]
    out = dict(base)
    out["scores"] = (total / sum(weights)).astype(np.float32)
    out["views"] = views
    return out
