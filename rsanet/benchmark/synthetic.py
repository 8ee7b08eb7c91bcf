"""Synthetic benchmark generation speed: clips/s of one DataLoader worker (one process, one torch thread).

For each clip length and frame size it times the bare generator (:func:`rsanet.data.synthetic.render_clip`:
every frame of a clip) and a whole training item of :func:`rsanet.data.build_dataset` for
``data.dataset: synthetic`` (rendering of the sampled frames, TSN segment sampling, the train transform at
the generated size; the item is uint8, normalization runs on the device). Both use the same generator spec,
taken from the config the dataset is built from.

Each number is ``clips / median time`` of ``repeats`` timed runs of ``clips`` clips (after ``warmup`` untimed
clips). Rendering is not the bottleneck of the synthetic runs when the item rate is well above the model's
training clips/s. The table is printed by ``python tools/benchmark.py synthetic``.
"""
from __future__ import annotations

from typing import Sequence

import torch

from rsanet.benchmark.common import items_per_second, one_thread
from rsanet.config import load_config
from rsanet.data import build_dataset
from rsanet.data.sets.synthetic import spec as synthetic_spec
from rsanet.data.synthetic import render_clip

__all__ = ["OPTIONS", "COLUMNS", "run", "item_config"]

COLUMNS = ["T", "HxW", "item", "render clips/s", "render+train clips/s", "train ms/clip"]
DISTINCT = 1000  # distinct training videos cycled through (each is a different random scene and motion)

# Options of the `synthetic` subcommand (tools/benchmark.py turns them into argparse arguments).
OPTIONS = [
    (("--sizes",), {"type": int, "nargs": "+", "default": [32, 64, 112],
                    "help": "square frame sides (data.synthetic.resolution), at least 16"}),
    (("--frames",), {"type": int, "nargs": "+", "default": [8], "help": "T, frames per clip (at least 2)"}),
    (("--clips",), {"type": int, "default": 20, "help": "clips per timed run"}),
]


def item_config(frames: int, size: int):
    """The config of a synthetic training set of ``frames`` x ``size`` x ``size`` clips, the model seeing
    every frame at the generated size, as in configs/_base_/synthetic.yaml (8 classes, no flip)."""
    return load_config(None, [
        "data.dataset=synthetic", f"data.synthetic.frames={frames}", f"model.num_segments={frames}",
        f"data.synthetic.resolution=[{size},{size}]", f"data.synthetic.train_size={DISTINCT}",
        "data.synthetic.classes=8", "model.num_classes=8", f"data.resize=[{size},{size}]",
        f"data.crop_size={size}", "data.scales=[1.0]", "data.flip=none", "data.segment_rule=uniform"])


def _row(frames: int, size: int, clips: int, repeats: int, warmup: int) -> dict:
    cfg = item_config(frames, size)
    spec = synthetic_spec(cfg)
    dataset = build_dataset(cfg, "train")
    clip = dataset[0]["clip"]  # (3, T, H, W) uint8
    item = f"{str(clip.dtype).replace('torch.', '')} {'x'.join(map(str, clip.shape))}"
    render = items_per_second(lambda i: render_clip(spec, "train", i), clips, DISTINCT, repeats, warmup)
    full = items_per_second(lambda i: dataset[i], clips, DISTINCT, repeats, warmup)
    return {"T": frames, "HxW": f"{size}x{size}", "item": item, "render clips/s": render,
            "render+train clips/s": full, "train ms/clip": 1000.0 / full}


def run(sizes: Sequence[int] = (32, 64, 112), frames: Sequence[int] = (8,), clips: int = 20, repeats: int = 5,
        warmup: int = 2, device: str = "auto", progress=None) -> dict:
    """Clips/s per worker for every clip length and frame size; returns {"title", "columns", "rows", "meta"}.

    Rendering runs on the CPU whatever ``device`` says (it is accepted for the common benchmark options).
    Bad values are refused before anything is measured (ValueError naming the option).
    """
    if clips < 1:
        raise ValueError(f"--clips must be at least 1, got {clips}")
    for t in frames:  # the config would refuse them too, but only when their row comes
        if t < 2:
            raise ValueError(f"--frames must be at least 2 (data.synthetic.frames), got {t}")
    for size in sizes:
        if size < 16:
            raise ValueError(f"--sizes must be at least 16 (data.synthetic.resolution), got {size}")
    rows = []
    with one_thread():
        for t in frames:
            for size in sizes:
                rows.append(_row(t, size, clips, repeats, warmup))
                if progress is not None:
                    progress(rows[-1])
    title = (f"Synthetic benchmark per worker (1 process, 1 torch thread), torch {torch.__version__}: clips/s = "
             f"{clips} clips / median of {repeats} runs; render = every frame of a clip; train = the dataset's "
             f"training item (TSN segment sampling, rendering, resize/crop at the generated size; uint8 out)")
    meta = {"torch": torch.__version__, "clips": clips, "repeats": repeats, "warmup": warmup,
            "distinct_videos": DISTINCT}
    return {"title": title, "columns": COLUMNS, "rows": rows, "meta": meta}
