"""Data pipeline throughput: clips/s of one DataLoader worker (one process, one torch thread).

For each backend it generates realistic media in a temporary folder, then times, per clip, the real decode
path (:meth:`VideoDataset.load` without the transform: timeout guard, frame count, TSN train sampling,
decoding) and the whole train path (plus resize to 240x320, multi-scale crop to 224, flip; the item is uint8,
normalization runs on the device).

Media (textured, moving, lightly noisy frames, so that they compress like real footage):

* ``frames``: SS-V1-like JPEG folders, 100 x 176 px, 48 frames (quality 90);
* ``webm``: SS-V2-like VP9 WebM, 240 x 428 px, 12 fps, 48 frames, read sequentially (the default for WebM);
* ``webm-seek``: the same files through decord's accurate ``get_batch`` (for comparison);
* ``mp4``: Diving-48-like H.264 MP4, 240 x 320 px, 30 fps, 96 frames.

Each number is ``clips / median time`` of ``repeats`` timed runs of ``clips`` clips (after ``warmup`` untimed
clips), with one torch thread, as in a DataLoader worker. The table is printed by
``python tools/benchmark.py data``.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import torch

from rsanet.benchmark.common import items_per_second, one_thread
from rsanet.data.datasets import VideoDataset, call_with_timeout
from rsanet.data.decoders import FrameFolderDecoder, VideoFileDecoder, decode_clip
from rsanet.data.records import VideoRecord
from rsanet.data.sampling import ClipSampler
from rsanet.data.transforms import FlipPolicy, TrainTransform
from rsanet.testing.media import textured_frames, write_frame_folder, write_video

__all__ = ["BACKENDS", "OPTIONS", "COLUMNS", "run", "make_media"]

BACKENDS = ("frames", "webm", "webm-seek", "mp4")
COLUMNS = ["backend", "media", "T", "decode clips/s", "decode+train clips/s", "train ms/clip"]

# Options of the `data` subcommand (tools/benchmark.py turns them into argparse arguments).
OPTIONS = [
    (("--frames",), {"type": int, "nargs": "+", "default": [8, 16], "help": "T, frames per clip"}),
    (("--backends",), {"nargs": "+", "default": list(BACKENDS), "choices": list(BACKENDS), "help": "media kinds"}),
    (("--clips",), {"type": int, "default": 10, "help": "clips per timed run"}),
    (("--videos",), {"type": int, "default": 4, "help": "distinct generated videos per backend"}),
]


def make_media(backend: str, root: Path, videos: int) -> tuple[list[VideoRecord], object, str]:
    """Write ``videos`` files for ``backend`` under ``root``; (records, decoder, description)."""
    if backend == "frames":
        for v in range(videos):
            write_frame_folder(root / f"{v}", textured_frames(48, 100, 176, seed=v), quality=90)
        return [VideoRecord(f"{v}", 0, 0) for v in range(videos)], FrameFolderDecoder(root), "jpeg 100x176, 48 f"
    if backend in ("webm", "webm-seek"):
        for v in range(videos):
            write_video(root / f"{v}.webm", textured_frames(48, 240, 428, seed=v), "libvpx-vp9", fps=12)
        seq = (".webm",) if backend == "webm" else ()
        desc = "vp9 240x428, 48 f" + (", sequential" if backend == "webm" else ", get_batch")
        return [VideoRecord(f"{v}.webm", 0, 0) for v in range(videos)], VideoFileDecoder(root, seq), desc
    if backend == "mp4":
        for v in range(videos):
            write_video(root / f"{v}.mp4", textured_frames(96, 240, 320, seed=v), "libx264", fps=30)
        return [VideoRecord(f"{v}.mp4", 0, 0) for v in range(videos)], VideoFileDecoder(root), "h264 240x320, 96 f"
    raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")


def _decode_only(ds: VideoDataset, video: int) -> None:
    """The dataset's decode path (guard, frame count, sampling, decoding) without the transform."""
    record = ds.records[video]
    call_with_timeout(lambda: decode_clip(ds.decoder, record, lambda r: ds.sampler(r, 0)), ds.decode_timeout,
                      record.path)


def _row(backend: str, records, decoder, desc: str, t: int, clips: int, repeats: int, warmup: int) -> dict:
    transform = TrainTransform((240, 320), 224, (1.0, 0.875, 0.75, 0.66), FlipPolicy("all"))
    ds = VideoDataset(records, decoder, ClipSampler(t, train=True), transform, ["x"], train=True)
    decode = items_per_second(lambda v: _decode_only(ds, v), clips, len(records), repeats, warmup)
    full = items_per_second(lambda v: ds[v], clips, len(records), repeats, warmup)
    return {"backend": backend, "media": desc, "T": t, "decode clips/s": decode, "decode+train clips/s": full,
            "train ms/clip": 1000.0 / full}


def run(frames: Sequence[int] = (8, 16), backends: Sequence[str] = BACKENDS, clips: int = 10, videos: int = 4,
        repeats: int = 5, warmup: int = 2, device: str = "auto", progress=None) -> dict:
    """Clips/s per worker for every backend and clip length; returns {"title", "columns", "rows", "meta"}.

    Decoding runs on the CPU whatever ``device`` says (it is accepted for the common benchmark options).
    """
    rows = []
    with one_thread(), tempfile.TemporaryDirectory(prefix="rsanet_data_bench_") as tmp:
        for backend in backends:
            records, decoder, desc = make_media(backend, Path(tmp) / backend, videos)
            for t in frames:
                rows.append(_row(backend, records, decoder, desc, t, clips, repeats, warmup))
                if progress is not None:
                    progress(rows[-1])
    title = (f"Data pipeline per worker (1 process, 1 torch thread), torch {torch.__version__}: clips/s = "
             f"{clips} clips / median of {repeats} runs; train = TSN segment sampling + resize 240x320, "
             f"multi-scale crop 224, flip (uint8 out; normalized on the device)")
    meta = {"torch": torch.__version__, "clips": clips, "repeats": repeats, "warmup": warmup, "videos": videos}
    return {"title": title, "columns": COLUMNS, "rows": rows, "meta": meta}
