"""Model benchmark: full training-step throughput (videos/s) and peak memory of RSANet-R50 and TSN-R50.

One training step is forward + backward + an SGD (momentum, Nesterov) update on a batch of random clips
(B, 3, T, S, S), exactly as the trainer runs it (same ``build_model``, the same autocast and channels-last
handling). ``rsanet`` is the paper's default RSANet-R50 (7 RSA layers); ``tsn`` is the same network with every
transform a 2D conv (TSN-R50). Cases vary frames (8/16), dtype (fp32 / bf16 autocast), channels-last and
``torch.compile``. Each case runs in a fresh subprocess on CPU (peak RSS growth) and in-process on CUDA
(allocator peak), like the layer benchmark.
"""
from __future__ import annotations

import itertools
from typing import Sequence

import torch

from rsanet.benchmark.common import (
    device_name,
    median_time,
    median_times,
    peak_memory_mb,
    resolve_device,
    run_in_subprocess,
)

__all__ = ["MODELS", "OPTIONS", "run", "measure_case", "build_benchmark_model"]

MODELS = {"rsanet": [], "tsn": ["model.transform.type=conv2d"]}  # name -> config overrides of the R50 default
COLUMNS = ["model", "memory", "T", "B", "size", "dtype", "ch-last", "compile", "step ms", "videos/s", "peak MiB",
           "x vs tsn"]

# Options of the `model` subcommand (tools/benchmark.py turns them into argparse arguments).
OPTIONS = [
    (("--batch",), {"type": int, "default": 8, "help": "clips per training step"}),
    (("--frames",), {"type": int, "nargs": "+", "default": [8, 16], "help": "T values to measure"}),
    (("--size",), {"type": int, "default": 224, "help": "crop side S (224 in the paper)"}),
    (("--models",), {"nargs": "+", "default": list(MODELS), "choices": list(MODELS), "help": "networks"}),
    (("--dtype",), {"nargs": "+", "default": ["fp32", "bf16"], "choices": ["fp32", "bf16"],
                    "help": "fp32, and/or bf16 autocast"}),
    (("--channels-last",), {"nargs": "+", "default": ["off"], "choices": ["off", "on"],
                            "help": "channels-last memory format for the 2D layers (off and/or on)"}),
    (("--compile",), {"nargs": "+", "default": ["off"], "choices": ["off", "on"],
                      "help": "torch.compile the model (off and/or on)"}),
    (("--memory",), {"nargs": "+", "default": ["save"], "choices": ["save", "recompute"],
                     "help": "model.transform.rsa.memory of the RSA layers (rsanet rows; save and/or recompute)"}),
    (("--window-conv",), {"default": "auto", "choices": ["auto", "native", "channels_last"],
                          "help": "model.transform.rsa.window_conv of the RSA layers"}),
    (("--interleave",), {"action": "store_true",
                          "help": "build all cases in one process and alternate their steps (ratios robust to "
                                  "a varying load; no peak memory)"}),
    (("--arch",), {"default": "resnet50", "choices": ["resnet18", "resnet34", "resnet50", "resnet101"],
                   "help": "backbone (resnet50 for the paper's numbers; smaller for smoke runs)"}),
    (("--width",), {"type": int, "default": 64, "help": "stem width (64 = standard; smaller for smoke runs)"}),
]


def build_benchmark_model(name: str, frames: int, arch: str = "resnet50", width: int = 64,
                          overrides: Sequence[str] = ()):
    """The model a case trains: the default config with the named and the given overrides, T = ``frames``."""
    from rsanet.config import load_config
    from rsanet.models import build_model

    overrides = MODELS[name] + [f"model.num_segments={frames}", f"model.arch={arch}", f"model.width={width}",
                                *overrides]
    if arch in ("resnet18", "resnet34"):
        overrides.append("model.transform.positions=[[1],[1],[1],[1]]")  # two blocks per stage
    cfg = load_config(None, overrides)
    return build_model(cfg), cfg.model.num_classes


def _build_step(case: dict):
    """The training-step closure of one case dict (model, frames, batch, dtype, flags, device)."""
    from rsanet.engine.runner import to_channels_last

    device = torch.device(case["device"])
    torch.manual_seed(0)
    rsa_opts = [f"model.transform.rsa.memory={case['memory']}",
                f"model.transform.rsa.window_conv={case['window_conv']}"]
    model, num_classes = build_benchmark_model(case["model"], case["T"], case["arch"], case["width"],
                                               rsa_opts if case["model"] == "rsanet" else [])
    model = model.to(device)
    model.train()
    if case["channels_last"]:
        to_channels_last(model)  # the trainer's own conversion (train.channels_last)
    step_model = torch.compile(model) if case["compile"] else model
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True, weight_decay=5e-4)
    b, s = case["batch"], case["size"]
    x = torch.randn(b, 3, case["T"], s, s, device=device)
    y = torch.randint(0, num_classes, (b,), device=device)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    autocast = case["dtype"] == "bf16"

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            loss = loss_fn(step_model(x).float(), y)
        loss.backward()
        opt.step()

    return step


def measure_case(case: dict) -> dict:
    """Median step time and peak memory of one case dict (model, frames, batch, dtype, flags, device)."""
    device = torch.device(case["device"])
    step = _build_step(case)
    step()  # first call (compilation, allocator warm-up) is never timed or counted in memory
    seconds = median_time(step, case["repeats"], case["warmup"], device)
    peak = peak_memory_mb(step, device)
    b = case["batch"]
    return {"step ms": seconds * 1e3, "videos/s": b / seconds, "peak MiB": peak}


def measure_interleaved(cases: list[dict]) -> list[dict]:
    """Median step times of several cases built in one process and timed in turn (case 1, 2, ..., 1, 2, ...),
    so that a varying machine load hits every case alike. Peak memory is not measured here."""
    steps = [_build_step(case) for case in cases]
    seconds = median_times(steps, cases[0]["repeats"], 1 + cases[0]["warmup"], torch.device(cases[0]["device"]))
    return [{"step ms": s * 1e3, "videos/s": case["batch"] / s, "peak MiB": None} for case, s in zip(cases, seconds)]


def _rows(models, frames, dtypes, channels_last, compiles, memory):
    specs = []
    for t, m, d, cl, co in itertools.product(frames, models, dtypes, channels_last, compiles):
        for mem in (memory if m == "rsanet" else ["-"]):  # the memory mode exists only in RSA layers
            specs.append(dict(model=m, memory=mem, T=t, dtype=d, channels_last=cl == "on", compile=co == "on"))
    return specs


def run(batch: int = 8, frames: Sequence[int] = (8, 16), size: int = 224, models: Sequence[str] = tuple(MODELS),
        dtype: Sequence[str] = ("fp32", "bf16"), channels_last: Sequence[str] = ("off",),
        compile: Sequence[str] = ("off",), arch: str = "resnet50", width: int = 64, device: str = "auto",
        repeats: int = 5, warmup: int = 2, isolate: bool = True, memory: Sequence[str] = ("save",),
        window_conv: str = "auto", interleave: bool = False, progress=None) -> dict:
    """Measure every combination; returns {"title", "columns", "rows", "meta"} for the table printer.

    On CPU each case runs in a fresh subprocess (``isolate``) so that peak-RSS growth is per case. With
    ``interleave`` all cases are built in this process and their steps alternate (robust ratios on a
    loaded machine; no peak memory).
    """
    dev = resolve_device(device)
    specs = _rows(models, frames, dtype, channels_last, compile, memory)
    cases = [{**spec, "batch": batch, "size": size, "arch": arch, "width": width, "device": str(dev),
              "repeats": repeats, "warmup": warmup, "window_conv": window_conv} for spec in specs]
    if interleave:
        results = measure_interleaved(cases)
    else:
        results = [run_in_subprocess("rsanet.benchmark.model:measure_case", case)
                   if dev.type == "cpu" and isolate else measure_case(case) for case in cases]
    rows = []
    for spec, result in zip(specs, results):
        row = {"model": spec["model"], "memory": spec["memory"], "T": spec["T"], "B": batch, "size": size,
               "dtype": spec["dtype"], "ch-last": "on" if spec["channels_last"] else "off",
               "compile": "on" if spec["compile"] else "off", **result}
        rows.append(row)
        if progress:
            progress(row)
    _add_ratios(rows)
    how = "steps of all cases alternated in one process" if interleave else "one case after another"
    title = (f"Training step (fwd+bwd+SGD) of {arch} (width {width}) on {device_name(dev)}, "
             f"median of {repeats} after {warmup} warm-up ({how}); videos/s = B / step time")
    meta = {"device": str(dev), "device_name": device_name(dev), "torch": torch.__version__, "arch": arch,
            "width": width, "batch": batch, "size": size, "repeats": repeats, "warmup": warmup}
    return {"title": title, "columns": COLUMNS, "rows": rows, "meta": meta}


def _add_ratios(rows: list[dict]) -> None:
    """Throughput of each row relative to TSN under the same settings ('x vs tsn')."""
    key = lambda r: (r["T"], r["B"], r["size"], r["dtype"], r["ch-last"], r["compile"])  # noqa: E731
    tsn = {key(r): r["videos/s"] for r in rows if r["model"] == "tsn"}
    for r in rows:
        base = tsn.get(key(r))
        r["x vs tsn"] = r["videos/s"] / base if base else None
