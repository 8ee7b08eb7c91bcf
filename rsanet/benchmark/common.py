"""Helpers shared by the benchmark levels: device choice, median timing, peak memory, tables and JSON.

Peak memory is measured honestly on both kinds of device: on CUDA as ``torch.cuda.max_memory_allocated``
above what was allocated before the measured call; on CPU, where no allocator statistic exists, each case
runs in a fresh Python subprocess and reports the growth of its peak resident set size
(``resource.getrusage(...).ru_maxrss``) over the level reached just before the measured call.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

__all__ = ["resolve_device", "synchronize", "median_time", "items_per_second", "one_thread", "peak_memory_mb",
           "rss_mb", "run_in_subprocess", "format_table", "write_json", "physical_memory_bytes", "device_name"]


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda when present, else cpu; anything else is passed to torch.device (and checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available")
    return device


def device_name(device: torch.device) -> str:
    """A human-readable name of the device, for table titles."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], object], repeats: int, warmup: int, device: torch.device) -> float:
    """Median wall time of ``fn()`` in seconds over ``repeats`` runs after ``warmup`` untimed runs."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def median_times(fns: Sequence[Callable[[], object]], repeats: int, warmup: int, device: torch.device) -> list[float]:
    """Median wall times in seconds of several ``fns`` timed in turn (1, 2, ..., 1, 2, ...) over ``repeats``
    rounds after ``warmup`` untimed runs of each, so that a varying machine load hits them alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, spent in zip(fns, times):
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            spent.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def items_per_second(step: Callable[[int], object], items: int, distinct: int, repeats: int, warmup: int) -> float:
    """``items / median time`` of ``repeats`` timed runs of ``items`` calls ``step(i)`` on the CPU, after
    ``warmup`` untimed calls; ``i`` cycles through ``0 .. distinct - 1`` across all calls."""
    counter = iter(range(10**9))

    def run() -> None:
        for _ in range(items):
            step(next(counter) % distinct)

    for _ in range(warmup):
        step(next(counter) % distinct)
    return items / median_time(run, repeats, 0, torch.device("cpu"))


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the block with one torch thread, as in a DataLoader worker; the thread count is restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux reports ru_maxrss in KiB)."""
    scale = 1.0 / 1024 if sys.platform != "darwin" else 1.0 / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> float:
    """Extra peak memory (MiB) of one call of ``fn`` over what was held just before it.

    CUDA: allocator statistics. CPU: growth of the process's peak RSS, which is only meaningful in a fresh
    process whose earlier peak is not higher (see :func:`run_in_subprocess`).
    """
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    before = rss_mb()
    fn()
    return rss_mb() - before


def run_in_subprocess(target: str, payload: dict, timeout: float | None = None) -> dict:
    """Call ``module:function(payload)`` in a fresh Python process and return the dict it returns.

    The child prints its result as one JSON line; this keeps CPU peak-RSS measurements of different cases
    independent of each other. Errors in the child are raised here with its stderr.
    """
    module, func = target.split(":")
    code = ("import json, sys\n"
            "import rsanet\n"
            f"from {module} import {func} as fn\n"
            "result = fn(json.loads(sys.argv[1]))\n"
            "print('@@RESULT@@' + json.dumps(result))\n")
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(payload)], capture_output=True, text=True,
                          timeout=timeout, env=env)
    for line in proc.stdout.splitlines():
        if line.startswith("@@RESULT@@"):
            return json.loads(line[len("@@RESULT@@"):])
    raise RuntimeError(f"benchmark subprocess for {payload} failed (exit {proc.returncode}):\n"
                       f"{proc.stderr[-4000:]}")


def physical_memory_bytes(device: torch.device) -> int:
    """Memory a case may use: free GPU memory on CUDA, physical RAM on CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)


def format_table(rows: Sequence[dict], columns: Sequence[str], title: str = "") -> str:
    """A plain-text table with one line per row and right-aligned cells (missing values print '-')."""
    cells = [[_cell(row.get(c)) for c in columns] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "  ".join(c.rjust(w) for c, w in zip(columns, widths))
    out = [title] if title else []
    out += [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(out)


def write_json(path: str | os.PathLike, payload: dict) -> None:
    """Write ``payload`` as indented JSON, creating parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")

