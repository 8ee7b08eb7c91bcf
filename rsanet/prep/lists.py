"""List files and class lists: TSN lines from probed frame counts, and lists of videos sorted into class folders."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from rsanet.data.records import VIDEO_EXTS, VideoRecord

__all__ = ["count_frames", "list_line", "class_folder_lists"]


def count_frames(decoder, record: VideoRecord) -> int:
    """Real frame count of a sample through its decoder (``frame_count``), lowered to a listed count."""
    n = decoder.frame_count(record)
    if n <= 0:
        raise ValueError(f"{record.path}: no frames")
    return n if record.num_frames <= 0 else min(n, record.num_frames)


def list_line(record: VideoRecord, num_frames: int) -> str:
    """``<path> <num_frames> <label>``; trimmed spans cannot be written in this format."""
    if record.start > 0 or (record.end is not None and record.end < num_frames):
        raise ValueError(f"{record.path}: a list file cannot hold the trimmed span [{record.start}, {record.end})")
    return f"{record.path} {num_frames} {record.label}"


def class_folder_lists(root: Path, val_fraction: float = 0.2,
                       exts: Sequence[str] = VIDEO_EXTS) -> tuple[list[str], list[str], list[str]]:
    """``(classes, train lines, val lines)`` for videos sorted into class folders: ``<root>/<class>/<clip>``,
    where a clip is a video file (by extension) or a frame folder. Classes are the folder names, sorted; lines
    are ``<class>/<clip> <label>``. Every ``k``-th clip of a class (k = round(1 / val_fraction)), in name
    order, goes to val; ``val_fraction`` 0 puts every clip in train. A path that ends in `` <number>`` is
    written as ``<path> 0 <label>`` (frame count unknown), so that it cannot be misread."""
    if not root.is_dir():
        raise FileNotFoundError(f"video folder not found: {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{root} holds no class folders: expected <root>/<class name>/<clip>")
    step = round(1 / val_fraction) if val_fraction > 0 else 0
    train, val = [], []
    for label, name in enumerate(classes):
        clips = sorted(p for p in (root / name).iterdir() if not p.name.startswith(".")
                       and (p.is_dir() or p.suffix.lower() in exts))
        if not clips:
            raise ValueError(f"{root / name} holds no video files ({', '.join(exts)}) or frame folders")
        for i, clip in enumerate(clips):
            path = f"{name}/{clip.name}"
            # a path ending in " <number>" would read as `<path> <num_frames>`: write 0 (count when decoded)
            line = f"{path} 0 {label}" if re.search(r"\s-?[0-9]+$", path) else f"{path} {label}"
            (val if step and i % step == step - 1 else train).append(line)
    return classes, train, val
