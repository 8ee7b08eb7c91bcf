"""Parameter and FLOP counts in the paper's convention, and the paper's reference numbers.

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
from typing import NamedTuple

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from rsanet.config import Config, load_config
from rsanet.models import build_model

__all__ = ["PAPER", "PaperRow", "count_params", "count_macs", "complexity", "ablation_rows", "format_table"]


class PaperRow(NamedTuple):
    """A row of the paper's tables: parameters (M) and FLOPs (G, i.e. GMACs) as printed."""

    table: str
    row: str
    params_m: float
    flops_g: float


# Reference numbers as printed in the paper (Tables 2, 4a-d, 6a-c; 8 frames, 224x224, 174 classes).
# Keys are the file names (without .yaml) of configs/ablations/.
PAPER: dict[str, PaperRow] = {r.row: r for r in [
    PaperRow("2", "table2_conv2d", 24.3, 32.5),
    PaperRow("2", "table2_conv3d", 39.3, 57.0),
    PaperRow("2", "table2_conv2plus1d", 26.8, 37.3),
    PaperRow("2", "table2_self_attention", 23.4, 32.2),
    PaperRow("2", "table2_self_attention_content", 23.4, 32.1),
    PaperRow("2", "table2_self_attention_position", 23.4, 32.1),
    PaperRow("2", "table2_self_attention_position_nosoftmax", 23.4, 32.1),
    PaperRow("2", "table2_rsa_context_v", 23.6, 32.6),
    PaperRow("2", "table2_rsa", 23.6, 33.2),
    PaperRow("4a", "table4a_kernel_v_context_v", 23.4, 32.3),
    PaperRow("4a", "table4a_kernel_r_context_v", 23.6, 32.7),
    PaperRow("4a", "table4a_kernel_vr_context_v", 23.6, 32.7),
    PaperRow("4a", "table4a_kernel_v_context_r", 23.4, 32.7),
    PaperRow("4a", "table4a_kernel_r_context_r", 23.6, 33.2),
    PaperRow("4a", "table4a_kernel_vr_context_r", 23.6, 33.2),
    PaperRow("4a", "table4a_kernel_v_context_vr", 23.4, 32.7),
    PaperRow("4a", "table4a_kernel_r_context_vr", 23.6, 33.2),
    PaperRow("4a", "table4a_kernel_vr_context_vr", 23.6, 33.2),
    PaperRow("4b", "table4b_latent_8", 20.5, 32.2),
    PaperRow("4b", "table4b_latent_16", 20.9, 34.7),
    PaperRow("4b", "table4b_latent_32", 21.7, 39.6),
    PaperRow("4b", "table4b_latent_cq", 22.0, 35.9),
    PaperRow("4c", "table4c_kernel_3x3x3", 20.3, 28.5),
    PaperRow("4c", "table4c_kernel_3x5x5", 20.7, 30.2),
    PaperRow("4c", "table4c_kernel_3x7x7", 21.2, 32.6),
    PaperRow("4c", "table4c_kernel_3x9x9", 22.0, 35.8),
    PaperRow("4c", "table4c_kernel_5x7x7", 22.0, 35.9),
    PaperRow("4c", "table4c_kernel_5x9x9", 23.3, 41.3),
    PaperRow("4d", "table4d_groups_1", 20.2, 35.9),
    PaperRow("4d", "table4d_groups_2", 20.2, 35.9),
    PaperRow("4d", "table4d_groups_4", 20.3, 35.9),
    PaperRow("4d", "table4d_groups_8", 20.5, 35.9),
    PaperRow("4d", "table4d_groups_cq", 22.0, 35.9),
    PaperRow("6a", "table6a_queries_1", 28.1, 252.5),
    PaperRow("6a", "table6a_queries_2", 23.9, 92.8),
    PaperRow("6a", "table6a_queries_4", 21.9, 48.2),
    PaperRow("6a", "table6a_queries_8", 20.9, 34.7),
    PaperRow("6a", "table6a_queries_16", 20.4, 30.2),
    PaperRow("6b", "table6b_layers_0", 24.3, 32.5),
    PaperRow("6b", "table6b_layers_1", 23.6, 33.2),
    PaperRow("6b", "table6b_layers_2", 22.6, 33.7),
    PaperRow("6b", "table6b_layers_4", 22.2, 34.6),
    PaperRow("6b", "table6b_layers_7", 22.0, 35.9),
    PaperRow("6c", "table6c_norm_none", 22.0, 35.9),
    PaperRow("6c", "table6c_norm_batchnorm", 22.0, 35.9),
    PaperRow("6c", "table6c_norm_l2", 22.0, 35.9),
]}


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not; buffers such as BN statistics excluded)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, frames: int, size: int = 224) -> int:
    """Multiply-accumulates of one eval-mode forward of a ``(1, 3, frames, size, size)`` clip.

    The input is created on the model's device (under an active FakeTensorMode it is a fake tensor).
    """
    x = torch.zeros(1, 3, frames, size, size, device=next(model.parameters()).device)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2  # the counter reports 2 FLOPs per multiply-accumulate


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
    order = {name: i for i, name in enumerate(PAPER)}
    paths = sorted(Path(config_dir).glob("*.yaml"), key=lambda p: (order.get(p.stem, len(order)), p.stem))
    if not paths:
        raise FileNotFoundError(f"no *.yaml configs in {config_dir}")
    rows = []
    for path in paths:
        ours = complexity(load_config(path, world_size=1), frames=frames, fake=fake)
        paper = PAPER.get(path.stem)
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
