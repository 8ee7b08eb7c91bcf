"""Memory benchmark: activation memory saved for backward per clip, RSANet-R50 against TSN-R50 and per RSA layer.

What autograd keeps between forward and backward is what limits batch size and frames. It is counted here
exactly and device-independently: during one training-mode forward, ``torch.autograd.graph.saved_tensors_hooks``
sees every tensor autograd saves; each is mapped to its storage, and the sizes of the distinct storages are
summed (views share a storage and count once, as in memory). Storages of parameters and buffers are left
out (they exist anyway). Nothing is timed, so the numbers do not depend on the machine's load.

Rows:

* ``model``: RSANet-R50 in each memory mode of the RSA layer (``model.transform.rsa.memory``: ``save``, the
  default, and ``recompute``), RSANet-R50 with ``model.checkpoint_rsa`` (the transforms recomputed whole),
  and TSN-R50, each with the ratio to TSN.
* ``layer``: one RSA layer at each R50 stage shape (C, H = W at the crop size), in each memory mode: the
  bytes it saves besides its own input (a TSN 3x3 conv saves nothing else: its input is kept by the ReLU
  before it), also as a multiple of the input's size.
"""
from __future__ import annotations

from typing import Sequence

import torch

from rsanet.benchmark.model import build_benchmark_model

__all__ = ["OPTIONS", "COLUMNS", "run", "saved_bytes", "MODEL_CASES"]

MIB = 2 ** 20
COLUMNS = ["level", "case", "stage", "T", "B", "size", "ch-last", "saved MiB", "x vs tsn", "x input"]
# name -> (benchmark model, config overrides)
MODEL_CASES = {
    "rsanet": ("rsanet", []),
    "rsanet-recompute": ("rsanet", ["model.transform.rsa.memory=recompute"]),
    "rsanet-checkpoint": ("rsanet", ["model.checkpoint_rsa=true"]),
    "tsn": ("tsn", []),
}
LAYER_MODES = ("save", "recompute")
STAGES = {"res2": (64, 4), "res3": (128, 8), "res4": (256, 16), "res5": (512, 32)}  # channels, downsampling

# Options of the `memory` subcommand (tools/benchmark.py turns them into argparse arguments).
OPTIONS = [
    (("--batch",), {"type": int, "default": 1, "help": "clips per batch (bytes are reported per clip)"}),
    (("--frames",), {"type": int, "nargs": "+", "default": [8], "help": "T values"}),
    (("--size",), {"type": int, "default": 224, "help": "crop side S"}),
    (("--models",), {"nargs": "+", "default": list(MODEL_CASES), "choices": list(MODEL_CASES),
                     "help": "model rows"}),
    (("--layer-modes",), {"nargs": "+", "default": list(LAYER_MODES), "choices": list(LAYER_MODES),
                          "help": "memory modes of the per-layer rows (none: --layer-modes with --no-layers)"}),
    (("--no-layers",), {"action": "store_true", "help": "skip the per-layer rows"}),
    (("--channels-last",), {"nargs": "+", "default": ["off"], "choices": ["off", "on"],
                            "help": "memory format of the networks (off and/or on)"}),
    (("--arch",), {"default": "resnet50", "choices": ["resnet18", "resnet34", "resnet50", "resnet101"],
                   "help": "backbone (resnet50 for the paper's numbers; smaller for smoke runs)"}),
    (("--width",), {"type": int, "default": 64, "help": "stem width (64 = standard; smaller for smoke runs)"}),
]


def saved_bytes(fn, exclude: Sequence[torch.Tensor] = ()) -> int:
    """Bytes of the distinct storages autograd saves while ``fn()`` runs, without those of ``exclude``."""
    skip = {t.untyped_storage().data_ptr() for t in exclude}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor):
        s = t.untyped_storage()
        if s.data_ptr() not in skip:
            storages[s.data_ptr()] = max(storages.get(s.data_ptr(), 0), s.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    del out
    return sum(storages.values())


def _model_bytes(case: str, frames: int, batch: int, size: int, channels_last: bool, arch: str, width: int) -> int:
    from rsanet.engine.runner import to_channels_last

    name, overrides = MODEL_CASES[case]
    torch.manual_seed(0)
    model, _ = build_benchmark_model(name, frames, arch, width, overrides=overrides)
    model.train()
    if channels_last:
        to_channels_last(model)
    x = torch.randn(batch, 3, frames, size, size)
    exclude = list(model.parameters()) + list(model.buffers())
    return saved_bytes(lambda: model(x), exclude)


def _layer_bytes(channels: int, side: int, frames: int, batch: int, mode: str) -> tuple[int, int]:
    from rsanet.ops import RSA

    layer = RSA(channels, channels, memory=mode)  # the paper's layer: L = 8, 5x7x7 window
    x = torch.randn(batch, channels, frames, side, side).contiguous(memory_format=torch.channels_last_3d)
    x.requires_grad_(True)
    exclude = [x, *layer.parameters()]
    return saved_bytes(lambda: layer(x), exclude), x.numel() * x.element_size()


def run(batch: int = 1, frames: Sequence[int] = (8,), size: int = 224, models: Sequence[str] = tuple(MODEL_CASES),
        layer_modes: Sequence[str] = LAYER_MODES, no_layers: bool = False, channels_last: Sequence[str] = ("off",),
        arch: str = "resnet50", width: int = 64, stages: dict | None = None, device: str = "cpu", repeats: int = 1,
        warmup: int = 0, progress=None) -> dict:
    """Model and per-layer rows; returns {"title", "columns", "rows", "meta"}.

    ``stages`` {name: (channels, downsampling)} replaces the R50 stages of the layer rows (tests use tiny
    ones). ``device``, ``repeats`` and ``warmup`` are accepted for the common options and ignored (the count
    is exact and device independent; it runs on the CPU).
    """
    unknown = [m for m in models if m not in MODEL_CASES]
    if unknown:
        raise ValueError(f"unknown model case {unknown[0]!r}; choose from {list(MODEL_CASES)}")
    rows = []
    for t in frames:
        for cl in channels_last:
            block = []
            for case in models:
                mib = _model_bytes(case, t, batch, size, cl == "on", arch, width) / batch / MIB
                block.append({"level": "model", "case": case, "T": t, "B": batch, "size": size, "ch-last": cl,
                              "saved MiB": mib})
                if progress is not None:
                    progress(block[-1])
            tsn = next((r["saved MiB"] for r in block if r["case"] == "tsn"), None)
            for r in block:
                r["x vs tsn"] = r["saved MiB"] / tsn if tsn else None
            rows += block
        if not no_layers:
            rows += _layer_rows(t, batch, size, layer_modes, stages or STAGES, progress)
    title = (f"Activation memory saved for backward per clip (distinct storages seen by saved_tensors_hooks, "
             f"parameters excluded), torch {torch.__version__}; layer rows: bytes besides the layer's input")
    meta = {"torch": torch.__version__, "batch": batch, "size": size, "arch": arch, "width": width}
    return {"title": title, "columns": COLUMNS, "rows": rows, "meta": meta}


def _layer_rows(frames: int, batch: int, size: int, modes: Sequence[str], stages: dict, progress) -> list[dict]:
    rows = []
    for stage, (c, down) in stages.items():
        side = -(-size // down)  # ceil, as the network's strided convs give
        for mode in modes:
            saved, inp = _layer_bytes(c, side, frames, batch, mode)
            rows.append({"level": "layer", "case": f"rsa {mode}", "stage": f"{stage} {c}x{side}x{side}", "T": frames,
                         "B": batch, "size": size, "saved MiB": saved / batch / MIB, "x input": saved / inp})
            if progress is not None:
                progress(rows[-1])
    return rows
