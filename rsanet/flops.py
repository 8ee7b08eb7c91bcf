"""Parameter and FLOP counts in the paper's convention, next to the paper's numbers (:mod:`rsanet.paper`).

"FLOPs" in the paper are multiply-accumulates (MACs) of convolutions, linear layers and matmuls/einsums for
one clip at 224x224; elementwise work (BN, ReLU, pooling, additions, normalisation, softmax) is not counted.
:func:`count_macs` runs one forward under :class:`torch.utils.flop_counter.FlopCounterMode`, which counts
exactly those aten ops (convolution of any dimension and group count, mm/addmm/bmm/baddbmm, to which
einsum and matmul lower, and attention kernels) at 2 FLOPs per MAC, and halves its total. By default the
model is built and run under :class:`FakeTensorMode` (tensors with shapes but no data), so a count takes a
second or two and no memory for activations; ``fake=False`` runs a real CPU forward and gives the same count.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from rsanet.config import Config, load_config
from rsanet.models import build_model
from rsanet.paper import ABLATIONS

__all__ = ["count_params", "forward_macs", "count_macs", "complexity", "ablation_rows", "format_table"]


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers such as BN statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def forward_macs(module: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one eval-mode, no-grad forward of ``module`` on ``x``."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(x)
    finally:
        module.train(was_training)
    return counter.get_total_flops() // 2  # the counter reports 2 FLOPs per multiply-accumulate


def count_macs(model: nn.Module, frames: int, size: int = 224) -> int:
    """Multiply-accumulates of one eval-mode forward of a ``(1, 3, frames, size, size)`` clip.

    The input is created on the model's device (under an active FakeTensorMode it is a fake tensor).
    """
    return forward_macs(model, torch.zeros(1, 3, frames, size, size, device=next(model.parameters()).device))


def complexity(cfg: Config, frames: int | None = None, size: int = 224, fake: bool = True) -> dict:
    """``{"params": int, "flops": int}`` of ``cfg.model`` for one clip (``frames`` defaults to num_segments).

    ``flops`` are MACs (paper convention). The model is built without loading ``model.pretrained``; with
    ``fake`` (default) under FakeTensorMode, else as a real CPU model.
    """
    mcfg = dataclasses.replace(cfg.model, pretrained=None)
    frames = frames or mcfg.num_segments
    if not fake:
        model = build_model(mcfg)
        return {"params": count_params(model), "flops": count_macs(model, frames, size)}
    with FakeTensorMode():
        model = build_model(mcfg)
        return {"params": count_params(model), "flops": count_macs(model, frames, size)}


def ablation_rows(config_dir: str | Path, frames: int | None = None, fake: bool = True) -> list[dict]:
    """Our counts next to the paper's for every ``*.yaml`` in ``config_dir`` (in the paper's row order; configs
    without a paper row come last, by name)."""
    order = {name: i for i, name in enumerate(ABLATIONS)}
    paths = sorted((p for p in Path(config_dir).glob("*.yaml") if not p.name.startswith("_")),  # _*: bases
                   key=lambda p: (order.get(p.stem, len(order)), p.stem))
    if not paths:
        raise FileNotFoundError(f"no *.yaml configs in {config_dir}")
    rows = []
    for path in paths:
        ours = complexity(load_config(path), frames=frames, fake=fake)
        paper = ABLATIONS.get(path.stem)
        rows.append({"config": path.stem, "table": paper.table if paper else "-", **ours,
                     "paper_params_m": paper.params_m if paper else None,
                     "paper_flops_g": paper.flops_g if paper else None})
    return rows


def _fmt(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(rows: list[dict]) -> str:
    """A Markdown table: config, our params (M) / FLOPs (G), the paper's, and the FLOP difference (%)."""
    lines = ["| config | params (M) | paper params (M) | FLOPs (G) | paper FLOPs (G) | FLOPs diff |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        params, flops = r["params"] / 1e6, r["flops"] / 1e9
        diff = "-" if r["paper_flops_g"] is None else f"{100 * (flops / r['paper_flops_g'] - 1):+.1f}%"
        lines.append(f"| {r['config']} | {params:.2f} | {_fmt(r['paper_params_m'], 1)} | {flops:.2f} | "
                     f"{_fmt(r['paper_flops_g'], 1)} | {diff} |")
    return "\n".join(lines)
