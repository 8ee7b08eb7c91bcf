#!/usr/bin/env python
"""Data pipeline throughput per worker: clips/s for each backend at 8 and 16 frames, decode alone and
decode + train transforms (same as ``python tools/benchmark.py data``).

    python benchmarks/data_pipeline.py [--frames 8 16] [--backends frames webm webm-seek mp4] [--json]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402

import rsanet  # noqa: E402,F401  (before any torchvision import)
from rsanet.benchmark.data import BACKENDS, benchmark_data, format_table, to_json  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS, help="backends to time")
    p.add_argument("--frames", nargs="+", type=int, default=[8, 16], help="frames per clip")
    p.add_argument("--clips", type=int, default=20, help="at least this many clips per measurement")
    p.add_argument("--seconds", type=float, default=2.0, help="at least this long per measurement")
    p.add_argument("--json", action="store_true", help="print JSON rows instead of a table")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    rows = benchmark_data(args.backends, args.frames, args.clips, args.seconds)
    print(to_json(rows) if args.json else format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
