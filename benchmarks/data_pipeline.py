#!/usr/bin/env python
"""Data pipeline throughput per worker: clips/s for each backend at 8 and 16 frames, decode alone and
decode + train transforms. The same as ``python tools/benchmark.py data``.

    python benchmarks/data_pipeline.py [--frames 8 16] [--backends frames webm webm-seek mp4] [--json out.json]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import argparse  # noqa: E402

import rsanet  # noqa: E402,F401  (before any torchvision import)
from rsanet.benchmark import data  # noqa: E402
from rsanet.benchmark.common import format_table, write_json  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for flags, kwargs in data.OPTIONS:
        p.add_argument(*flags, **kwargs)
    p.add_argument("--repeats", type=int, default=5, help="timed runs; the median is reported")
    p.add_argument("--warmup", type=int, default=2, help="untimed clips before timing")
    p.add_argument("--json", metavar="PATH", default=None, help="also write the table as JSON")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = vars(parse_args(argv))
    json_path = args.pop("json")
    result = data.run(**args, progress=lambda row: print(f"  done: {row}", file=sys.stderr, flush=True))
    print(format_table(result["rows"], result["columns"], title=result["title"]))
    if json_path:
        write_json(json_path, {"level": "data", **result})
        print(f"wrote {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
