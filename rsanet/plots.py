"""Figures of a run: the confusion matrix of a test (Pillow) and the training curves (matplotlib).

* :func:`draw_confusion_matrix` writes the row-normalised confusion matrix (row = true class, column =
  predicted class; white 0 to dark blue 1, the share of the row's videos) as a PNG with Pillow, which every
  install has. Class names label the rows and columns when there are at most 40 classes.
* :func:`plot_training_curves` reads a work dir's ``metrics.jsonl`` and draws three panels over epochs:
  training loss, learning rate, and validation top-1 / top-5. It needs matplotlib (optional); without it
  it raises :class:`PlotUnavailable`, whose message says what to install.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

__all__ = ["PlotUnavailable", "CONFUSION_LOW", "CONFUSION_HIGH", "draw_confusion_matrix", "read_metrics",
           "curve_series", "plot_training_curves"]

CONFUSION_LOW = (255, 255, 255)  # colour of a row share of 0
CONFUSION_HIGH = (8, 48, 107)  # colour of a row share of 1
_MAX_NAMED = 40  # classes up to which names are written next to the matrix


class PlotUnavailable(RuntimeError):
    """The figure cannot be drawn here (matplotlib is missing); the message says what to install."""


def _atomic_save(image_save, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    try:
        image_save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def draw_confusion_matrix(cm: np.ndarray, path: str | os.PathLike, classes: Optional[Sequence[str]] = None,
                          title: str = "") -> dict:
    """Write ``cm`` (K x K counts, row = truth) as a PNG heat map of the row shares; returns the layout
    ``{"x0", "y0", "cell"}``: cell (i, j) covers ``x0 + j * cell .. + cell`` and ``y0 + i * cell .. + cell``."""
    from PIL import Image, ImageDraw, ImageFont

    cm = np.asarray(cm, dtype=np.float64)
    k = cm.shape[0]
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)  # (K, K) in [0, 1]
    cell = int(np.clip(640 // max(k, 1), 2, 32))
    font = ImageFont.load_default()
    named = classes is not None and len(classes) == k and k <= _MAX_NAMED
    label_w = max((int(font.getlength(str(n)[:28])) for n in classes), default=0) + 8 if named else 0
    x0, y0 = 8 + label_w + 14, 28
    width, height = x0 + k * cell + 8, y0 + k * cell + 8 + (label_w if named else 0) + 14
    low, high = np.array(CONFUSION_LOW, np.float64), np.array(CONFUSION_HIGH, np.float64)
    pixels = low + share[..., None] * (high - low)  # (K, K, 3)
    grid = np.repeat(np.repeat(np.rint(pixels).astype(np.uint8), cell, axis=0), cell, axis=1)  # (K*cell, K*cell, 3)
    image = Image.new("RGB", (width, height), (255, 255, 255))
    image.paste(Image.fromarray(grid), (x0, y0))
    draw = ImageDraw.Draw(image)
    draw.text((8, 6), title or f"confusion matrix ({k} classes): rows true, columns predicted, share of row",
              fill=(0, 0, 0), font=font)
    draw.rectangle([x0 - 1, y0 - 1, x0 + k * cell, y0 + k * cell], outline=(120, 120, 120))
    if named:
        for i, name in enumerate(classes):
            draw.text((8, y0 + i * cell + (cell - 10) // 2), str(name)[:28], fill=(0, 0, 0), font=font)
        column = Image.new("RGB", (label_w, k * cell), (255, 255, 255))
        col_draw = ImageDraw.Draw(column)
        for j, name in enumerate(classes):
            col_draw.text((2, j * cell + (cell - 10) // 2), str(name)[:28], fill=(0, 0, 0), font=font)
        image.paste(column.rotate(90, expand=True), (x0, y0 + k * cell + 4))
    _atomic_save(lambda p: image.save(p, format="PNG"), Path(path))
    return {"x0": x0, "y0": y0, "cell": cell}


# ------------------------------------------------------------------------------------------------ curves
def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The records of a ``metrics.jsonl``; when a resumed run logged a step again, its last record counts."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no metrics file: {path} (tools/train.py writes it into the work dir)")
    latest: dict[tuple[str, int], dict] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
        latest[(row.get("kind", ""), int(row.get("step", n)))] = row
    return sorted(latest.values(), key=lambda r: (r["step"], r.get("kind", "")))


def _as_float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def curve_series(records: Sequence[dict]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{name: (epochs, values)}`` for ``loss``, ``lr`` (train records) and ``top1``, ``top5`` (val records).

    A train record at optimizer step ``s`` of epoch ``e`` sits at ``e - 1 + (s - start) / length``, where the
    epoch's start and length come from the last step logged in each epoch (every epoch logs its last step);
    a validation record sits at its epoch.
    """
    train = [r for r in records if r.get("kind") == "train"]
    ends: dict[int, int] = {}
    for r in train:
        ends[int(r["epoch"])] = max(ends.get(int(r["epoch"]), 0), int(r["step"]))
    length = {e: ends[e] - ends.get(e - 1, 0) for e in ends}
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if train:
        last, x = max(ends), []
        for r in train:
            e = int(r["epoch"])
            span = length.get(e - 1, length[e]) if e == last else length[e]  # the last epoch may be unfinished
            x.append(e - 1 + (int(r["step"]) - ends.get(e - 1, 0)) / max(span, 1))
        for name in ("loss", "lr"):
            out[name] = (np.asarray(x), np.asarray([_as_float(r.get(name)) for r in train]))
    val = [r for r in records if r.get("kind") == "val"]
    for name in ("top1", "top5"):
        if val:
            epochs = np.asarray([float(r["epoch"]) for r in val])
            out[name] = (epochs, np.asarray([_as_float(r.get(name)) for r in val]))
    return out


def plot_training_curves(metrics: str | os.PathLike, path: str | os.PathLike, title: str = "") -> Path:
    """Draw loss, learning rate and validation top-1 / top-5 over epochs from ``metrics`` (a
    ``metrics.jsonl``) into the PNG ``path``. Raises :class:`PlotUnavailable` without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotUnavailable("drawing training curves needs matplotlib: `pip install matplotlib`") from None
    series = curve_series(read_metrics(metrics))
    if not series:
        raise ValueError(f"{metrics} holds no training or validation record yet")
    fig = Figure(figsize=(12, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 3)
    panels = [("loss", ["loss"], "training loss"), ("learning rate", ["lr"], "learning rate"),
              ("validation accuracy (%)", ["top1", "top5"], "validation")]
    for ax, (ylabel, names, heading) in zip(axes, panels):
        for name in names:
            if name in series:
                x, y = series[name]
                ax.plot(x, y, marker="o" if name.startswith("top") else None, markersize=3, label=name)
        if not any(name in series for name in names):
            ax.text(0.5, 0.5, "no records", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel)
        ax.set_title(heading)
        ax.grid(alpha=0.3)
        if len(names) > 1 and any(name in series for name in names):
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _atomic_save(lambda p: fig.savefig(p, format="png"), Path(path))
