"""Write a TSN list file (``<path> <num_frames> <label>``) for one split of a configured dataset.

    python tools/prepare_list.py --config configs/ssv1_rsa_8f.yaml --split train --out lists/ssv1_train.txt

The annotations are read with the dataset's official parser (so labels follow the pinned class order) and
every frame folder or video is probed for its real frame count. Use the list with ``data.dataset=list``,
``data.train_annotations=<out>`` and ``data.label_file`` set to the committed ``data/<dataset>/classes.txt``.
Samples that cannot be probed are reported and left out; the exit code is then 1.
"""
import argparse
import sys
from pathlib import Path

from rsanet.config import ConfigError, load_config
from rsanet.data import AnnotationError, build_records
from rsanet.prep.lists import count_frames, list_line


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="experiment YAML (data.* keys name the dataset)")
    p.add_argument("--opts", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--split", default="train", choices=["train", "val", "test"], help="annotation split")
    p.add_argument("--out", required=True, type=Path, help="list file to write")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = load_config(args.config, args.opts)
        records, decoder, _, _ = build_records(cfg, args.split)
    except (ConfigError, FileNotFoundError, AnnotationError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    lines, failed = [], []
    for record in records:
        try:
            lines.append(list_line(record, count_frames(decoder, record)))
        except Exception as e:
            failed.append(record.path)
            print(f"SKIPPED {record.path}: {e}", file=sys.stderr)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(f"{line}\n" for line in lines))
    print(f"wrote {len(lines)} lines to {args.out}; {len(failed)} samples skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
