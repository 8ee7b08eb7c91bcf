"""Decode every video of a dataset split through the real pipeline and list what is unreadable.

    python tools/check_dataset.py --config configs/ssv1_rsa_8f.yaml --split val
    python tools/check_dataset.py --config configs/ssv2_rsa_8f.yaml --opts data.root=/data/ssv2 --limit 1000

Prints the number of videos per class, frame-count statistics, and every unreadable or missing file.
Exits 1 if any file is unreadable or missing, 2 on a config or path error, 0 otherwise. The start-up checks
of training run first and fail the same way (exit 2): unlabelled (-1) entries in the training split, and
entries of the other backend's kind (video files under data.backend=frames, or the reverse).
"""
import argparse
import logging
import os
import sys

from rsanet.config import ConfigError, load_config
from rsanet.data import AnnotationError, build_dataset
from rsanet.data.check import check_dataset, check_entries, check_train_labels, format_report, resolve_from_files


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="experiment YAML")
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE", help="overrides, e.g. data.root=/data")
    p.add_argument("--split", default="train", choices=["train", "val", "test"], help="split to check")
    p.add_argument("--limit", type=int, default=None, help="check only the first N videos")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes (0: this process)")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        cfg = load_config(args.config, args.opts)
        for level, note in resolve_from_files(cfg, [args.split]):
            print(f"{level}: {note}", file=sys.stderr if level == "warning" else sys.stdout)
        dataset = build_dataset(cfg, args.split)
        source = getattr(cfg.data, f"{args.split}_annotations", None) or args.split
        if args.split == cfg.train.split:
            check_train_labels(dataset, source)
        check_entries(dataset, args.split, source, max_fraction=1.0)  # missing files are listed below
    except (ConfigError, FileNotFoundError, AnnotationError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    workers = min(args.workers, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else args.workers)
    report = check_dataset(dataset, args.limit, workers, args.progress)
    print(f"{cfg.data.dataset} {args.split}: {dataset.num_videos} videos, {len(dataset.classes)} classes, "
          f"backend {cfg.data.backend}")
    print(format_report(report))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
