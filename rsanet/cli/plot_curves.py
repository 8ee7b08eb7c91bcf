"""Training curves of a run as a PNG: loss, learning rate and validation top-1 / top-5 over epochs.

    python tools/plot_curves.py work_dirs/ssv1_rsa_8f                  # -> work_dirs/ssv1_rsa_8f/curves.png
    python tools/plot_curves.py work_dirs/a work_dirs/b --out-name curves_now.png

Reads each work dir's metrics.jsonl (written by tools/train.py; a running or stopped run works too; steps
logged twice because of a resume count once). tools/train.py draws the same figure when training ends.
Needs matplotlib (`pip install matplotlib`); without it the tool says so and exits with 2.
"""
import argparse
import sys
from pathlib import Path

from rsanet.plots import PlotUnavailable, plot_training_curves


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("work_dirs", nargs="+", type=Path, help="work dirs holding metrics.jsonl")
    p.add_argument("--out-name", default="curves.png", help="file name of the figure inside each work dir")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    failed = 0
    for work_dir in args.work_dirs:
        try:
            path = plot_training_curves(work_dir / "metrics.jsonl", work_dir / args.out_name, title=str(work_dir))
        except PlotUnavailable as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except (OSError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            continue
        print(path)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
