#!/usr/bin/env python
"""Generation speed of the synthetic motion benchmark: clips per second, single process, one CPU thread.

Measures the bare generator (``render_clip``: all frames of a clip) and a full training item of
``build_dataset`` (generation + sampler + train transform; the uint8 item, normalized later on the device),
at a few resolutions, and prints a Markdown table.

    python tools/synthetic_speed.py
    python tools/synthetic_speed.py --sizes 64 112 --frames 16 --seconds 5
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

import rsanet  # noqa: E402,F401  (before any torchvision import)
from rsanet.config import load_config  # noqa: E402
from rsanet.data import build_dataset  # noqa: E402
from rsanet.data.synthetic import SyntheticSpec, render_clip  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 112], help="square frame sides to measure")
    p.add_argument("--frames", type=int, default=8, help="frames per clip (default 8)")
    p.add_argument("--seconds", type=float, default=3.0, help="time spent on each measurement")
    return p.parse_args(argv)


def rate(fn, seconds: float) -> float:
    """Calls per second of ``fn(i)`` over about ``seconds`` (after one warm-up call)."""
    fn(0)
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        n += 1
        fn(n)
    return n / (time.perf_counter() - start)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    print(f"| frames | size | generator (clips/s) | dataset item: generate + transform (clips/s) |")
    print("|---:|---:|---:|---:|")
    for size in args.sizes:
        spec = SyntheticSpec(seed=0, frames=args.frames, height=size, width=size, num_classes=8)
        cfg = load_config(None, ["data.dataset=synthetic", f"data.synthetic.frames={args.frames}",
                                 f"model.num_segments={args.frames}", f"data.synthetic.resolution=[{size},{size}]",
                                 f"data.resize=[{size},{size}]", f"data.crop_size={size}", "data.scales=[1.0]",
                                 "data.flip=none", "data.synthetic.train_size=100000", "model.num_classes=8"])
        dataset = build_dataset(cfg, "train")
        gen = rate(lambda i: render_clip(spec, "train", i), args.seconds)
        item = rate(lambda i: dataset[i], args.seconds)
        print(f"| {args.frames} | {size} | {gen:.0f} | {item:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
