"""Cut FineGym element clips from the raw YouTube videos, in two stages (event, then sub-action).

    python tools/prepare_finegym.py --annotation finegym_annotation_info_v1.1.json --videos /data/gym/raw \\
        --events /data/gym/events --clips /data/gym/subactions \\
        --only gym99_train_element_v1.1.txt gym99_val_element.txt --workers 8

``--videos`` holds ``<youtube id>.<ext>``. Events are written to ``--events`` as ``<yt>_E_xxxxxx_yyyyyy.mp4``,
then sub-actions to ``--clips`` as ``<clip id>.mp4``, the ids of the element files; point ``data.root`` at
``--clips``. ``--only`` restricts the cut to the clips listed in element files. YouTube ids without a raw
video are listed (the dataset then reports and drops their clips). ``--dry-run`` prints the plan only.
"""
import argparse
import json
import sys
from pathlib import Path

from rsanet.prep.finegym import cut_command, finegym_cut_plan, read_clip_ids
from rsanet.prep.jobs import find_ffmpeg, run_jobs


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--annotation", required=True, type=Path, help="finegym_annotation_info_v1.*.json")
    p.add_argument("--videos", required=True, type=Path, help="folder of raw videos <youtube id>.<ext>")
    p.add_argument("--events", required=True, type=Path, help="output folder of event clips (stage 1)")
    p.add_argument("--clips", required=True, type=Path, help="output folder of sub-action clips (stage 2)")
    p.add_argument("--only", nargs="*", type=Path, default=None, help="element files whose clips to cut")
    p.add_argument("--workers", type=int, default=4, help="parallel ffmpeg processes")
    p.add_argument("--ffmpeg", default="ffmpeg", help="ffmpeg executable")
    p.add_argument("--dry-run", action="store_true", help="print the plan, cut nothing")
    return p.parse_args(argv)


def stage(name: str, cuts, ffmpeg: str, workers: int) -> int:
    todo = [c for c in cuts if not c.dst.is_file()]
    print(f"{name}: {len(todo)} to cut ({len(cuts) - len(todo)} already present)")
    failed = run_jobs([(cut_command(ffmpeg, c), c.dst) for c in todo], workers)
    for dst, err in failed:
        print(f"FAILED {dst}: {err}", file=sys.stderr)
    return len(failed)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.annotation.is_file():
        print(f"error: annotation file not found: {args.annotation}", file=sys.stderr)
        return 2
    try:
        only = read_clip_ids(args.only) if args.only else None
        annotation = json.loads(args.annotation.read_text())
        events, actions, missing = finegym_cut_plan(annotation, args.videos, args.events, args.clips, only)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"plan: {len(events)} events, {len(actions)} sub-action clips; {len(missing)} raw videos missing")
    for yt in missing:
        print(f"MISSING raw video {args.videos / yt}.*", file=sys.stderr)
    if args.dry_run:
        for cut in events + actions:
            print(f"{cut.src} [{cut.start:.3f}, {cut.end:.3f}] -> {cut.dst}")
        return 0
    try:
        ffmpeg = find_ffmpeg(args.ffmpeg)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    failed = stage("events", events, ffmpeg, args.workers)
    failed += stage("sub-actions", [a for a in actions if a.src.is_file()], ffmpeg, args.workers)
    return 1 if failed or missing else 0


if __name__ == "__main__":
    sys.exit(main())
