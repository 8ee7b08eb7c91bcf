"""Layer benchmark: forward+backward time and peak memory of one RSA layer at the RSANet-R50 stage shapes.

Three implementations of the same numbers are compared: ``ours`` (the default :class:`rsanet.ops.RSA`
forward, Eq. 12 reordered), ``paper_eq12`` (a plain transcription of the paper's Fig. 5 pseudo-code) and
``reference`` (the literal Eq. 8, :func:`rsanet.ops.rsa_reference`, skipped where its estimated
O(B*N*M*(L*C_Q + M)) footprint exceeds the memory budget). Each case is measured in a fresh subprocess on
CPU (peak RSS growth) and in-process on CUDA (allocator peak). The layer is the paper's default: L = 8,
D = G = C_Q, M = 5 x 7 x 7, L2 norm, basic + relational kernel and context, C_in = C_out = C.
"""
from __future__ import annotations

from typing import Sequence

import torch

from rsanet.benchmark.common import (
    device_name,
    median_time,
    median_times,
    peak_memory_mb,
    physical_memory_bytes,
    resolve_device,
    run_in_subprocess,
)

__all__ = ["STAGES", "IMPLS", "DTYPES", "OPTIONS", "run", "measure_case", "reference_bytes"]

STAGES = {"res2": (64, 56), "res3": (128, 28), "res4": (256, 14), "res5": (512, 7)}  # channels, H = W at 224^2
IMPLS = ("ours", "paper_eq12", "reference")
DTYPES = ("fp32", "bf16")
COLUMNS = ["stage", "C", "HxW", "T", "B", "dtype", "impl", "window conv", "memory", "fwd+bwd ms", "peak MiB",
           "x vs paper", "note"]
WINDOW_CONVS = ("auto", "native", "channels_last", "batched")  # rsanet.ops.channelwise_conv.STRATEGIES
MEMORY_MODES = ("save", "recompute")  # rsanet.ops.rsa_core.MEMORY_MODES

# Options of the `layer` subcommand (tools/benchmark.py turns them into argparse arguments).
OPTIONS = [
    (("--batch",), {"type": int, "default": 1, "help": "clips per batch"}),
    (("--frames",), {"type": int, "default": 8, "choices": [8, 16], "help": "T, frames per clip"}),
    (("--dtype",), {"nargs": "+", "default": ["fp32"], "choices": list(DTYPES),
                    "help": "fp32, and/or bf16 autocast"}),
    (("--impl",), {"nargs": "+", "default": list(IMPLS), "choices": list(IMPLS), "help": "implementations"}),
    (("--stages",), {"nargs": "+", "default": list(STAGES), "choices": list(STAGES), "help": "R50 stages"}),
    (("--window-conv",), {"nargs": "+", "default": ["auto"], "choices": list(WINDOW_CONVS),
                           "help": "window-conv strategies of `ours` (model.transform.rsa.window_conv)"}),
    (("--memory",), {"nargs": "+", "default": ["save"], "choices": list(MEMORY_MODES),
                     "help": "memory modes of `ours` (model.transform.rsa.memory)"}),
    (("--interleave",), {"action": "store_true",
                          "help": "time the cases of each stage in turn in one process (robust ratios under "
                                  "load; no peak memory)"}),
    (("--threads",), {"type": int, "default": 0, "help": "CPU threads per case (0: torch's default)"}),
    (("--memory-budget-gb",), {"type": float, "default": None,
                               "help": "skip `reference` above this estimate (default: 25%% of RAM or "
                                       "80%% of free GPU memory)"}),
]


def reference_bytes(channels: int, size: int, frames: int, batch: int, queries: int = 8,
                    window: int = 245, element_size: int = 4) -> int:
    """Rough peak of :func:`rsa_reference` fwd+bwd: the unfolded keys/values, the Hadamard product and its
    gradient, the correlation, the context pieces and the M x M self-correlation with its gradient."""
    cq = channels // queries
    positions = batch * frames * size * size
    per_window = 2 * cq + 2 * queries * cq + queries * cq + 4 * cq + 2 * window
    return positions * window * per_window * element_size


def _impl_fn(name: str):
    from rsanet.ops import paper_eq12, rsa_reference

    if name == "ours":
        return lambda m, x: m(x)
    if name == "paper_eq12":
        return paper_eq12
    if name == "reference":
        return rsa_reference
    raise ValueError(f"unknown implementation {name!r}; choose from {list(IMPLS)}")


def _build_step(case: dict):
    """The fwd+bwd closure of one case dict (stage shape, impl, dtype, device, window conv, memory mode)."""
    from rsanet.ops import RSA

    device = torch.device(case["device"])
    if case.get("threads"):
        torch.set_num_threads(case["threads"])
    torch.manual_seed(0)
    c, s = case["channels"], case["size"]
    module = RSA(c, c, memory=case.get("memory", "save"), window_conv=case.get("window_conv", "auto")).to(device)
    x = torch.randn(case["batch"], c, case["frames"], s, s, device=device, requires_grad=True)
    fn = _impl_fn(case["impl"])
    autocast = case["dtype"] == "bf16"

    out_size = (case["batch"], c, case["frames"], s // module.stride, s // module.stride)
    grad = torch.randn(out_size, device=device)  # a dense output gradient, as in training

    def step():
        x.grad = None
        module.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            y = fn(module, x)
        y.backward(grad.to(y.dtype))

    return step


def measure_case(case: dict) -> dict:
    """Time and peak memory of fwd+bwd for one case dict (stage shape, impl, dtype, device, repeats...)."""
    device = torch.device(case["device"])
    step = _build_step(case)
    peak = peak_memory_mb(step, device)  # the first call doubles as the first warm-up run
    seconds = median_time(step, repeats=case["repeats"], warmup=max(case["warmup"] - 1, 0), device=device)
    return {"ms": seconds * 1e3, "peak_mib": peak}


def measure_interleaved(cases: list[dict]) -> list[dict]:
    """Median fwd+bwd times of several cases of one stage built in this process and timed in turn, so that a
    varying machine load hits them alike (no peak memory)."""
    steps = [_build_step(case) for case in cases]
    seconds = median_times(steps, cases[0]["repeats"], max(cases[0]["warmup"], 1), torch.device(cases[0]["device"]))
    return [{"ms": s * 1e3, "peak_mib": None} for s in seconds]


def _groups(stages: dict, impls, dtypes, batch, frames, device, repeats, warmup, budget, window_convs, memories):
    """[(row, case, skip, need), ...] per stage: the cases measured side by side (every dtype and impl)."""
    groups = []
    for stage, (c, s) in stages.items():
        group = []
        for dtype in dtypes:
            for impl in impls:
                variants = [(w, m) for w in window_convs for m in memories] if impl == "ours" else [(None, None)]
                for window_conv, memory in variants:
                    row = {"stage": stage, "C": c, "HxW": f"{s}x{s}", "T": frames, "B": batch, "dtype": dtype,
                           "impl": impl, "window conv": window_conv, "memory": memory}
                    case = {"channels": c, "size": s, "frames": frames, "batch": batch, "dtype": dtype,
                            "impl": impl, "device": str(device), "repeats": repeats, "warmup": warmup,
                            "window_conv": window_conv or "auto", "memory": memory or "save"}
                    need = reference_bytes(c, s, frames, batch) if impl == "reference" else 0
                    group.append((row, case, need > budget, need))
        groups.append(group)
    return groups


def run(batch: int = 1, frames: int = 8, dtype: Sequence[str] = ("fp32",), impl: Sequence[str] = IMPLS,
        stages: Sequence[str] | dict = tuple(STAGES), repeats: int = 5, warmup: int = 2, device: str = "auto",
        memory_budget_gb: float | None = None, threads: int = 0, isolate: bool = True,
        window_conv: Sequence[str] = ("auto",), memory: Sequence[str] = ("save",), interleave: bool = False,
        progress=None) -> dict:
    """Measure every (stage, dtype, impl) case; returns {"title", "columns", "rows", "meta"}.

    ``ours`` is measured once per (window-conv strategy, memory mode) pair; the baselines once. With
    ``interleave`` the cases of one stage (every dtype and implementation) are built in this process and
    timed in turn (robust ratios on a loaded machine; no peak memory).

    ``stages`` names entries of :data:`STAGES`, or is a dict {name: (channels, size)} for custom shapes
    (the test suite uses a tiny one). On CPU each case runs in a fresh subprocess unless ``isolate`` is
    False (then CPU peak memory is only the growth of this process's peak RSS, a lower bound).
    ``progress`` is called with each finished row.
    """
    dev = resolve_device(device)
    if isinstance(stages, dict):
        shapes = dict(stages)
    else:
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            raise ValueError(f"unknown stage {unknown[0]!r}; choose from {list(STAGES)}")
        shapes = {s: STAGES[s] for s in stages}
    for d in dtype:
        if d not in DTYPES:
            raise ValueError(f"unknown dtype {d!r}; choose from {list(DTYPES)}")
    budget = (memory_budget_gb * 2**30 if memory_budget_gb is not None
              else (0.25 if dev.type == "cpu" else 0.8) * physical_memory_bytes(dev))
    rows = []
    for group in _groups(shapes, impl, dtype, batch, frames, dev, repeats, warmup, budget, window_conv, memory):
        todo = []
        for row, case, skip, need in group:
            case["threads"] = threads
            if skip:
                row["note"] = f"skipped: needs ~{need / 2**30:.1f} GiB > budget {budget / 2**30:.1f} GiB"
            else:
                todo.append((row, case))
        if interleave and todo:
            results = measure_interleaved([case for _, case in todo])
        else:
            isolated = isolate and dev.type == "cpu"
            results = [run_in_subprocess("rsanet.benchmark.layer:measure_case", case) if isolated
                       else measure_case(case) for _, case in todo]
        for (row, _), result in zip(todo, results):
            row["fwd+bwd ms"], row["peak MiB"] = result["ms"], result["peak_mib"]
        for row, *_ in group:
            rows.append(row)
            if progress is not None:
                progress(row)
    _add_speedups(rows)
    where = f"CPU ({threads} threads)" if dev.type == "cpu" and threads else device_name(dev)
    how = ("cases of a stage alternated in one process" if interleave else "peak = extra memory of one step"
           f" ({'allocator peak' if dev.type == 'cuda' else 'peak RSS growth'}"
           f"{', fresh process per case' if isolate and dev.type == 'cpu' else ''})")
    title = (f"RSA layer fwd+bwd on {where}, torch {torch.__version__}: median of {repeats} after {warmup} "
             f"warm-up; {how}")
    meta = {"device": str(dev), "device_name": where, "torch": torch.__version__, "batch": batch,
            "frames": frames, "repeats": repeats, "warmup": warmup, "budget_bytes": int(budget)}
    return {"title": title, "columns": COLUMNS, "rows": rows, "meta": meta}


def _add_speedups(rows: list[dict]) -> None:
    """'x vs paper' = paper_eq12 time / this row's time, for rows of the same stage and dtype."""
    paper = {(r["stage"], r["dtype"]): r.get("fwd+bwd ms") for r in rows if r["impl"] == "paper_eq12"}
    for r in rows:
        base = paper.get((r["stage"], r["dtype"]))
        if base and r.get("fwd+bwd ms"):
            r["x vs paper"] = base / r["fwd+bwd ms"]

