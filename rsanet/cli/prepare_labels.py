"""Write the class list (one name per line, line n = class n) that a dataset's parser reads from its
official label file, e.g. to commit the Gym288 map or to check a download against ``data/<dataset>/``.

    python tools/prepare_labels.py --dataset gym288 --label-file gym288_categories.txt --out data/gym288/classes.txt
"""
import argparse
import sys
from pathlib import Path

from rsanet.data import AnnotationError
from rsanet.data.sets import DATASETS

# the datasets that come with a label file (rsanet.data.sets: read_classes is not None)
LABEL_FILE_DATASETS = [name for name, module in DATASETS.items() if module.read_classes is not None]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, choices=LABEL_FILE_DATASETS, help="dataset whose label file to read")
    p.add_argument("--label-file", required=True, type=Path, help="official labels / vocab / categories file")
    p.add_argument("--out", type=Path, default=None, help="file to write (default: print)")
    p.add_argument("--check", type=Path, default=None, help="compare with this class list; exit 1 if different")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        names = DATASETS[args.dataset].read_classes(args.label_file)
    except (FileNotFoundError, AnnotationError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    text = "".join(f"{n}\n" for n in names)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {len(names)} classes to {args.out}")
    elif not args.check:
        sys.stdout.write(text)
    if args.check:
        pinned = [line.strip() for line in args.check.read_text().splitlines() if line.strip()]
        if pinned != names:
            diff = next((i for i, (a, b) in enumerate(zip(pinned, names)) if a != b), min(len(pinned), len(names)))
            print(f"DIFFERENT from {args.check}: first difference at class {diff}", file=sys.stderr)
            return 1
        print(f"same {len(names)} classes in the same order as {args.check}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
