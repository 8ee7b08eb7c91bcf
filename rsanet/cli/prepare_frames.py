"""Extract JPEG frames from every video under a folder with ffmpeg (the fast path for SS-V2 and others).

    python tools/prepare_frames.py --videos /data/ssv2/20bn-something-something-v2 \\
        --frames /data/ssv2/frames --height 256 --workers 8

Each video ``<videos>/<rel>/<name>.<ext>`` becomes ``<frames>/<rel>/<name>/00001.jpg ...`` (``-vf
scale=-1:<height> -q:v 1``), so a config switches to it with ``data.backend=frames data.root=<frames>``.
Folders that already hold frames are skipped, so an interrupted run can simply be restarted. Without an
ffmpeg binary on PATH (and no --ffmpeg), frames are decoded with PyAV, else decord, and written with
Pillow: the same folders and frame sizes, several times slower.
"""
import argparse
import functools
import sys
from pathlib import Path

from rsanet.data.records import VIDEO_EXTS
from rsanet.prep.frames import extract_frames_command, extract_frames_python, frame_jobs, python_decoder
from rsanet.prep.jobs import find_ffmpeg, partial_path, run_jobs


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", required=True, type=Path, help="folder of videos (searched recursively)")
    p.add_argument("--frames", required=True, type=Path, help="output folder of frame folders")
    p.add_argument("--height", type=int, default=256, help="frame height in pixels (width keeps the aspect)")
    p.add_argument("--quality", type=int, default=1, help="JPEG quality for ffmpeg -q:v (1 = best)")
    p.add_argument("--template", default="{:05d}.jpg", help="frame file name, as data.frame_template")
    p.add_argument("--start", type=int, default=1, help="number of the first frame, as data.frame_start")
    p.add_argument("--ext", nargs="*", default=list(VIDEO_EXTS), help="video extensions to extract")
    p.add_argument("--workers", type=int, default=4, help="parallel ffmpeg processes")
    p.add_argument("--ffmpeg", default=None,
                   help="ffmpeg executable (default: `ffmpeg` on PATH, else PyAV or decord in Python)")
    return p.parse_args(argv)


def extractor(args: argparse.Namespace):
    """``job(video, out_dir)`` -> a command line (ffmpeg) or a callable (PyAV / decord); prints which."""
    try:
        ffmpeg = find_ffmpeg(args.ffmpeg or "ffmpeg")
    except RuntimeError:
        if args.ffmpeg:  # asked for explicitly: its absence is an error
            raise
        library = python_decoder()
        print(f"ffmpeg not found on PATH: extracting with {'PyAV' if library == 'av' else 'decord'} "
              "(slower; install ffmpeg for speed)")
        return lambda v, out: functools.partial(extract_frames_python, v, out, args.height, args.quality,
                                                args.template, args.start, library)
    return lambda v, out: extract_frames_command(ffmpeg, v, out, args.height, args.quality, args.template, args.start)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        job = extractor(args)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.videos.is_dir():
        print(f"error: video folder not found: {args.videos}", file=sys.stderr)
        return 2
    exts = tuple(e if e.startswith(".") else f".{e}" for e in args.ext)
    jobs = frame_jobs(args.videos, args.frames, exts)
    print(f"extracting frames of {len(jobs)} videos into {args.frames}")
    failed = run_jobs([(job(v, partial_path(out, True)), out) for v, out in jobs], args.workers, is_dir=True)
    for out, err in failed:
        print(f"FAILED {out}: {err}", file=sys.stderr)
    print(f"done: {len(jobs) - len(failed)} extracted, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
