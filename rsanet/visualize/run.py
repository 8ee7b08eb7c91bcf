"""One kernel visualization end to end: read a video, capture the kernels, write PNGs (and more).

For ``video.mp4`` and layer ``layer1.1.conv2`` the files in ``out_dir`` are

* ``video_layer1.1.conv2_kernels.png``: the Fig. 3 grid (:func:`rsanet.visualize.render.render_kernels`);
* ``video_layer1.1.conv2_clip.png``: all frames with the query and context marked;
* ``video_layer1.1.conv2_kernels.npz``: the raw kernels (``kernel_<kind>`` arrays (L, t, h, w)), the query,
  the feature-map shape, the window size and the frames, for plotting elsewhere;
* with ``reverse``: the same three with ``_reversed`` for the clip played backwards, its query at the
  mirrored time t' = T - 1 - t (the same video frame);
* with ``tensorboard``: every PNG also as a TensorBoard image under ``out_dir/tensorboard``.

The clip is the first test-time clip, centre crop, of the config's test pipeline.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from torch import nn

from rsanet.config import Config
from rsanet.inference import load_clip
from rsanet.visualize.capture import KernelCapture, capture_kernels, default_layer, kernel_changes, mirror_query
from rsanet.visualize.render import Layout, render_clip, render_kernels

__all__ = ["VisualizationResult", "visualize_video"]


@dataclass
class VisualizationResult:
    """What :func:`visualize_video` wrote and captured; ``changes`` compares reversed vs forward kernels."""

    files: list[Path] = field(default_factory=list)
    captures: list[KernelCapture] = field(default_factory=list)
    changes: Optional[dict[str, float]] = None


def _save_npz(cap: KernelCapture, path: Path) -> Path:
    arrays = {f"kernel_{kind}": k.numpy() for kind, k in cap.kernels.items()}
    np.savez_compressed(path, layer=np.array(cap.layer), query=np.array(cap.query),
                        feature_shape=np.array(cap.feature_shape), kernel_size=np.array(cap.kernel_size),
                        reversed=np.array(cap.reversed), frames=cap.frames.numpy(), **arrays)
    return path


def _write(cap: KernelCapture, out_dir: Path, stem: str, layout: Layout, queries, writer) -> list[Path]:
    suffix = "_reversed" if cap.reversed else ""
    base = out_dir / f"{stem}_{cap.layer}"
    images = {"kernels": render_kernels(cap, layout, queries).image, "clip": render_clip(cap, layout).image}
    files = []
    for name, image in images.items():
        path = Path(f"{base}_{name}{suffix}.png")
        image.save(path)
        files.append(path)
        if writer is not None:
            writer.add_image(f"{stem}/{cap.layer}/{name}{suffix}", np.asarray(image), 0, dataformats="HWC")
    files.append(_save_npz(cap, Path(f"{base}_kernels{suffix}.npz")))
    return files


def _stem(video: str | os.PathLike) -> str:
    """File-name stem for a video: ``clip`` for clip.mp4, ``synthetic_test_3`` for synthetic://test/3 (a video
    a dataset names itself, ``<scheme>://<name>``)."""
    text = str(video)
    scheme, sep, name = text.partition("://")
    if sep:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{scheme}_{name}")
    return Path(text).stem or "video"


def visualize_video(model: nn.Module, cfg: Config, video: str | os.PathLike, out_dir: str | os.PathLike,
                    layer: Optional[str] = None, query: Optional[Sequence[int]] = None, reverse: bool = False,
                    queries: Optional[Sequence[int]] = None, layout: Layout = Layout(),
                    tensorboard: bool = False) -> VisualizationResult:
    """Capture and draw the kernels of ``layer`` (default: the first RSA layer) at ``query`` (default: the
    centre) for ``video``; with ``reverse`` also for the clip played backwards (see the module doc)."""
    layer = layer or default_layer(model)
    clip, frames = load_clip(cfg, video)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    writer = None
    if tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out_dir / "tensorboard"))
    result = VisualizationResult()
    try:
        forward = capture_kernels(model, layer, clip, frames, query)
        result.captures.append(forward)
        if reverse:
            backward = capture_kernels(model, layer, clip.flip(1), frames.flip(0),
                                       mirror_query(forward.query, forward.feature_shape), reversed=True)
            result.captures.append(backward)
            result.changes = kernel_changes(forward, backward)
        stem = _stem(video)
        for cap in result.captures:
            result.files += _write(cap, out_dir, stem, layout, queries, writer)
    finally:
        if writer is not None:
            writer.close()
    return result
