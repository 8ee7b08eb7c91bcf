"""Profile level: where one RSA layer's fwd+bwd time goes, by kind of operator (torch.profiler).

Each stage shape of :mod:`rsanet.benchmark.layer` runs ``repeats`` training steps of the default layer under
``torch.profiler``; the self time of every operator is summed into a category:

* ``window convs``: the convolutions (forward, weight and input gradients; oneDNN / cuDNN / native kernels);
* ``matmuls``: the per-position batched products and the 1x1x1 projections (bmm, mm, addmm, ...);
* ``norms``: the L2 normalization's reductions and divisions;
* ``layout copies``: copies, concatenations and transpositions between memory layouts;
* ``other``: everything else (element-wise ops, reductions of filter gradients, Python overhead of the
  autograd functions).

Times are per step in ms (CPU self time, or CUDA kernel time on a GPU). The profiler adds overhead, so
the total is larger than the ``layer`` level's time; the split is what this level is for.

Each row also sets the layer beside what it replaces in RSANet-R50, TSN's frame-wise 3x3 conv at the same
shape (C -> C over the B*T frames), profiled the same way: ``3x3 conv ms``, the layer's time and FLOPs as
multiples of the conv's (``x time`` fwd+bwd; ``x FLOPs`` of the forward, counted as
:func:`rsanet.flops.forward_macs` counts, with a backward taken as twice its forward for both, the usual
convention: torch's counter formula for a grouped conv's weight gradient ignores the groups), and ``efficiency`` =
x FLOPs / x time, the layer's FLOP/s as a fraction of the dense conv's. A layer that ran at the conv's
FLOP/s would cost ``x FLOPs`` times its time.
"""
from __future__ import annotations

from typing import Sequence

import torch

from rsanet.benchmark.common import device_name, resolve_device, synchronize
from rsanet.benchmark.layer import STAGES
from rsanet.flops import forward_macs

__all__ = ["OPTIONS", "COLUMNS", "CATEGORIES", "run", "categorize"]

CATEGORIES = ("window convs", "matmuls", "norms", "layout copies", "other")
COLUMNS = ["stage", "C", "HxW", "T", "B", "dtype", "memory", *CATEGORIES, "total ms", "3x3 conv ms", "x time",
           "x FLOPs", "efficiency"]
_CONV = ("conv", "mkldnn_convolution", "convolution_backward", "_slow_conv")
_MATMUL = ("bmm", "mm", "addmm", "baddbmm", "matmul", "linear", "einsum")
_NORM = ("norm", "div", "sqrt", "square", "clamp")
_COPY = ("copy_", "clone", "cat", "contiguous", "_to_copy", "permute", "transpose", "repeat", "flip", "index")

# Options of the `profile` subcommand (tools/benchmark.py turns them into argparse arguments).
OPTIONS = [
    (("--batch",), {"type": int, "default": 1, "help": "clips per batch"}),
    (("--frames",), {"type": int, "default": 8, "help": "T, frames per clip"}),
    (("--stages",), {"nargs": "+", "default": list(STAGES), "choices": list(STAGES), "help": "R50 stages"}),
    (("--dtype",), {"nargs": "+", "default": ["fp32"], "choices": ["fp32", "bf16"], "help": "fp32 and/or bf16"}),
    (("--memory",), {"nargs": "+", "default": ["save"], "choices": ["save", "recompute"],
                     "help": "memory modes of the layer"}),
    (("--size",), {"type": int, "default": 224, "help": "crop side the stage shapes are taken at"}),
    (("--threads",), {"type": int, "default": 0, "help": "CPU threads (0: torch's default)"}),
]


def categorize(name: str) -> str:
    """The category of a profiler event: aten operators by name; autograd nodes and the rest are "other"."""
    if not name.startswith("aten::"):
        return "other"
    op = name.split("::")[-1]
    if any(op.startswith(p) or p in op for p in _CONV):
        return "window convs"
    if op in _MATMUL:
        return "matmuls"
    if any(op.startswith(p) for p in _NORM) or "vector_norm" in op:
        return "norms"
    if any(op.startswith(p) for p in _COPY):
        return "layout copies"
    return "other"


def _training_step(layer, x, grad, autocast: bool, device: torch.device):
    """One fwd+bwd of ``layer`` on ``x`` (a leaf) with output gradient ``grad``, as a closure."""

    def step():
        x.grad = None
        layer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            y = layer(x)
        y.backward(grad.to(y.dtype))

    return step


def _profile_case(step, repeats: int, device: torch.device) -> dict:
    from torch.profiler import ProfilerActivity, profile

    step()
    step()
    synchronize(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(repeats):
            step()
        synchronize(device)
    totals = dict.fromkeys(CATEGORIES, 0.0)
    for event in prof.key_averages():  # self times partition the step's time
        self_us = event.self_device_time_total if device.type == "cuda" else event.self_cpu_time_total
        totals[categorize(event.key)] += self_us / 1e3 / repeats
    return totals


class _Conv3x3:
    """Profiled fwd+bwd time (ms) and forward MACs (rsanet.flops) of TSN's 3x3 conv C -> C over ``frames``
    frames of side s, by (C, s, dtype), measured once each."""

    def __init__(self, frames: int, repeats: int, device: torch.device):
        self.frames, self.repeats, self.device, self.done = frames, repeats, device, {}

    def __call__(self, c: int, s: int, dtype: str) -> tuple[float, int]:
        if (c, s, dtype) not in self.done:
            torch.manual_seed(0)
            conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False).to(self.device)
            x = torch.randn(self.frames, c, s, s, device=self.device, requires_grad=True)
            step = _training_step(conv, x, torch.randn(self.frames, c, s, s, device=self.device), dtype == "bf16",
                                  self.device)
            self.done[(c, s, dtype)] = (sum(_profile_case(step, self.repeats, self.device).values()),
                                        forward_macs(conv, x))
        return self.done[(c, s, dtype)]


def run(batch: int = 1, frames: int = 8, stages: Sequence[str] = tuple(STAGES), dtype: Sequence[str] = ("fp32",),
        memory: Sequence[str] = ("save",), size: int = 224, threads: int = 0, device: str = "auto",
        repeats: int = 3, warmup: int = 2, stage_shapes: dict | None = None, progress=None) -> dict:
    """One row per (stage, dtype, memory mode); returns {"title", "columns", "rows", "meta"}.

    ``stage_shapes`` {name: (channels, side at 224)} replaces the R50 stages (tests use a tiny one).
    """
    from rsanet.ops import RSA

    dev = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    shapes = stage_shapes or STAGES
    rows = []
    conv3x3 = _Conv3x3(batch * frames, repeats, dev)
    for stage in (stages if stage_shapes is None else list(stage_shapes)):
        c, side224 = shapes[stage]
        s = -(-side224 * size // 224)
        for d in dtype:
            for mode in memory:
                torch.manual_seed(0)
                layer = RSA(c, c, memory=mode).to(dev)
                x = torch.randn(batch, c, frames, s, s, device=dev, requires_grad=True)
                step = _training_step(layer, x, torch.randn(batch, c, frames, s, s, device=dev), d == "bf16", dev)
                cats = _profile_case(step, repeats, dev)
                total = sum(cats.values())
                conv_ms, conv_macs = conv3x3(c, s, d)
                x_time, x_flops = total / conv_ms, forward_macs(layer, x) / conv_macs
                rows.append({"stage": stage, "C": c, "HxW": f"{s}x{s}", "T": frames, "B": batch, "dtype": d,
                             "memory": mode, **cats, "total ms": total, "3x3 conv ms": conv_ms, "x time": x_time,
                             "x FLOPs": x_flops, "efficiency": x_flops / x_time})
                if progress is not None:
                    progress(rows[-1])
    where = f"CPU ({threads} threads)" if dev.type == "cpu" and threads else device_name(dev)
    title = (f"RSA layer fwd+bwd by operator kind on {where}, torch {torch.__version__}: self time "
             f"per step (ms) under torch.profiler, {repeats} steps after 2 warm-up")
    meta = {"device": str(dev), "torch": torch.__version__, "batch": batch, "frames": frames, "size": size}
    return {"title": title, "columns": COLUMNS, "rows": rows, "meta": meta}
