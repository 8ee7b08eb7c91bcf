"""List files for your own videos, sorted into one folder per class.

    python tools/make_list.py videos --out lists --val-fraction 0.2

``videos/<class name>/<clip>`` (video files such as .mp4/.webm, or JPEG frame folders) becomes
``lists/classes.txt`` (the class folder names, sorted: line n is label n), ``lists/train.txt`` and
``lists/val.txt`` with one ``<class name>/<clip> <label>`` line per clip (every 5th clip of each class in
name order goes to val for 0.2; 0 puts everything in train and writes no val.txt). Use them with
``data.dataset: list``, ``data.root: videos``, ``data.train_annotations``, ``data.val_annotations`` and
``data.label_file``; the README's "Train on your own videos" has the whole config.
"""
import argparse
import sys
from pathlib import Path

from rsanet.data.records import VIDEO_EXTS
from rsanet.prep.lists import class_folder_lists


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("videos", type=Path, help="folder holding one sub-folder of clips per class")
    p.add_argument("--out", required=True, type=Path, help="folder for classes.txt, train.txt and val.txt")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of each class's clips for val (0..0.5)")
    p.add_argument("--ext", nargs="*", default=list(VIDEO_EXTS), help="video file extensions")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not 0 <= args.val_fraction <= 0.5:
        print(f"error: --val-fraction must be in [0, 0.5], got {args.val_fraction}", file=sys.stderr)
        return 2
    exts = tuple((e if e.startswith(".") else f".{e}").lower() for e in args.ext)
    try:
        classes, train, val = class_folder_lists(args.videos, args.val_fraction, exts)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    files = {"classes.txt": classes, "train.txt": train, "val.txt": val}
    for name, lines in files.items():
        if lines:
            (args.out / name).write_text("".join(f"{line}\n" for line in lines))
    print(f"{len(classes)} classes, {len(train)} train and {len(val)} val clips: "
          + ", ".join(str(args.out / n) for n, lines in files.items() if lines))
    print(f"config: data.dataset=list data.root={args.videos} data.train_annotations={args.out / 'train.txt'} "
          + (f"data.val_annotations={args.out / 'val.txt'} " if val else "data.val_annotations=null ")
          + f"data.label_file={args.out / 'classes.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
