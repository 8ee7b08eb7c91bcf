"""JPEG frame extraction: with the ffmpeg binary, else PyAV or decord and Pillow (see :mod:`rsanet.prep`)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from rsanet.data.records import VIDEO_EXTS

__all__ = ["ffmpeg_pattern", "extract_frames_command", "python_decoder", "extract_frames_python", "frame_jobs"]


def ffmpeg_pattern(frame_template: str) -> str:
    """``data.frame_template`` (Python format, e.g. ``{:05d}.jpg``) as an ffmpeg pattern (``%05d.jpg``)."""
    pattern, count = re.subn(r"\{(?::0?(\d*)d)?\}", lambda m: f"%0{m.group(1)}d" if m.group(1) else "%d",
                             frame_template)
    if count != 1 or "{" in pattern or "}" in pattern:
        raise ValueError(f"frame template {frame_template!r} must hold exactly one {{}} or {{:0Nd}} field")
    return pattern


def extract_frames_command(ffmpeg: str, video: Path, out_dir: Path, height: int = 256, quality: int = 1,
                           frame_template: str = "{:05d}.jpg", frame_start: int = 1) -> list[str]:
    """The ffmpeg command that writes every frame of ``video`` as JPEG into ``out_dir``."""
    return [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(video),
            "-vf", f"scale=-1:{height}", "-q:v", str(quality), "-start_number", str(frame_start),
            str(out_dir / ffmpeg_pattern(frame_template))]


def python_decoder() -> str:
    """The Python library :func:`extract_frames_python` decodes with: ``"av"`` (PyAV) or ``"decord"``."""
    import importlib.util
    for name in ("av", "decord"):
        try:
            if importlib.util.find_spec(name) is not None:
                return name
        except ValueError:  # a module set to None in sys.modules
            continue
    raise RuntimeError("extracting frames needs the ffmpeg binary, PyAV (`pip install av`) or decord")


def _decoded_frames(video: Path, library: str):
    """RGB uint8 frames (H, W, 3) of ``video``, in order."""
    if library == "av":
        import av
        with av.open(str(video)) as container:
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="rgb24")
        return
    from decord import VideoReader, cpu
    reader = VideoReader(str(video), num_threads=1, ctx=cpu(0))
    for i in range(len(reader)):
        yield reader[i].asnumpy()


def extract_frames_python(video: Path, out_dir: Path, height: int = 256, quality: int = 1,
                          frame_template: str = "{:05d}.jpg", frame_start: int = 1, library: str = "") -> int:
    """Every frame of ``video`` as JPEG in ``out_dir``, scaled to ``height`` keeping the aspect ratio (as
    ffmpeg's ``scale=-1:<height>``), without the ffmpeg binary. ``quality`` is ffmpeg's ``-q:v`` (1 best .. 31),
    mapped to Pillow's 95 .. 5. Returns the number of frames written."""
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    pil_quality = int(round(95 - (min(max(quality, 1), 31) - 1) * 3))
    count = 0
    for count, frame in enumerate(_decoded_frames(video, library or python_decoder()), 1):
        image = Image.fromarray(frame)
        width = max(1, int(round(image.width * height / image.height)))
        if image.size != (width, height):
            image = image.resize((width, height), Image.BILINEAR)
        image.save(out_dir / frame_template.format(frame_start + count - 1), quality=pil_quality)
    if count == 0:
        raise RuntimeError(f"no frame of {video} decodes")
    return count


def frame_jobs(video_root: Path, frame_root: Path, exts: Sequence[str] = VIDEO_EXTS,
               skip_done: bool = True) -> list[tuple[Path, Path]]:
    """(video, frame folder) pairs for every video under ``video_root``, mirroring the tree."""
    jobs = []
    for video in sorted(p for p in video_root.rglob("*") if p.suffix.lower() in exts and p.is_file()):
        out = frame_root / video.relative_to(video_root).with_suffix("")
        if skip_done and out.is_dir() and any(out.iterdir()):
            continue
        jobs.append((video, out))
    return jobs
