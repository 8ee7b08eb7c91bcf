"""Data pipeline throughput: clips/s of one DataLoader worker (one process, one torch thread).

For each backend it generates realistic media in a temporary folder, then times, per clip, the real decode
path (:meth:`VideoDataset.load` without the transform: timeout guard, frame count, TSN train sampling,
decoding) and the whole train path (plus resize to 240x320, multi-scale crop to 224, flip, normalize).

Media (textured, moving, lightly noisy frames, so that they compress like real footage):

* ``frames``: SS-V1-like JPEG folders, 100 x 176 px, 48 frames (quality 90);
* ``webm``: SS-V2-like VP9 WebM, 240 x 428 px, 12 fps, 48 frames, read sequentially (the default for WebM);
* ``webm-seek``: the same files through decord's accurate ``get_batch`` (for comparison);
* ``mp4``: Diving-48-like H.264 MP4, 240 x 320 px, 30 fps, 96 frames.

The table is printed by ``python tools/benchmark.py data`` or ``python benchmarks/data_pipeline.py``.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from rsanet.data.datasets import VideoDataset, call_with_timeout
from rsanet.data.decoders import FrameFolderDecoder, VideoFileDecoder, decode_clip
from rsanet.data.media import textured_frames, write_frame_folder, write_video
from rsanet.data.records import VideoRecord
from rsanet.data.sampling import ClipSampler
from rsanet.data.transforms import FlipPolicy, TrainTransform

__all__ = ["BACKENDS", "DataBenchRow", "benchmark_data", "format_table", "to_json"]

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
BACKENDS = ("frames", "webm", "webm-seek", "mp4")


@dataclass
class DataBenchRow:
    """One line of the table."""

    backend: str
    media: str
    frames: int
    decode_clips_per_s: float
    train_clips_per_s: float


def _make_media(backend: str, root: Path, videos: int) -> tuple[list[VideoRecord], object, str]:
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


def _rate(fn: Callable[[int], None], count: int, min_seconds: float) -> float:
    """Calls per second of ``fn(i)``, over at least ``count`` calls and ``min_seconds`` (after one warm-up)."""
    fn(0)
    done, start = 0, time.perf_counter()
    while done < count or time.perf_counter() - start < min_seconds:
        fn(done)
        done += 1
    return done / (time.perf_counter() - start)


def benchmark_data(backends: Sequence[str] = BACKENDS, frames: Sequence[int] = (8, 16), clips: int = 20,
                   min_seconds: float = 2.0, videos: int = 4) -> list[DataBenchRow]:
    """Clips/s per worker for every backend and clip length (see the module doc)."""
    rows = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    try:
        with tempfile.TemporaryDirectory(prefix="rsanet_data_bench_") as tmp:
            for backend in backends:
                records, decoder, desc = _make_media(backend, Path(tmp) / backend, videos)
                for t in frames:
                    flip = FlipPolicy("all")
                    transform = TrainTransform((240, 320), 224, (1.0, 0.875, 0.75, 0.66), flip, MEAN, STD)
                    ds = VideoDataset(records, decoder, ClipSampler(t, train=True), transform, ["x"], train=True)
                    decode = _rate(lambda i: _decode_only(ds, i % len(records)), clips, min_seconds)
                    full = _rate(lambda i: ds[i % len(records)], clips, min_seconds)
                    rows.append(DataBenchRow(backend, desc, t, decode, full))
    finally:
        torch.set_num_threads(threads)
    return rows


def _decode_only(ds: VideoDataset, video: int) -> None:
    """The dataset's decode path without the transform."""
    record = ds.records[video]
    call_with_timeout(lambda: decode_clip(ds.decoder, record, lambda r: ds.sampler(r, 0)), ds.decode_timeout,
                      record.path)


def format_table(rows: Sequence[DataBenchRow]) -> str:
    """Markdown table of the rows."""
    lines = ["| backend | media | frames | decode (clips/s) | decode + train transforms (clips/s) |",
             "|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.backend} | {r.media} | {r.frames} | {r.decode_clips_per_s:.1f} | "
                     f"{r.train_clips_per_s:.1f} |")
    return "\n".join(lines)


def to_json(rows: Sequence[DataBenchRow]) -> str:
    return json.dumps([asdict(r) for r in rows], indent=2)
