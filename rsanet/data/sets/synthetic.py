"""The built-in synthetic motion benchmark (``data.dataset: synthetic``): clips rendered on the fly by
:mod:`rsanet.data.synthetic` from ``(data.synthetic.seed, split, index)``, nothing on disk.

Its options are the ``data.synthetic`` section (:class:`SyntheticConfig`). Splits ``train`` (``train_size``
clips), ``val`` and ``test`` (``val_size`` clips each) are independent random streams of the same
distribution. A record's path is ``synthetic://<split>/<index>``; the research tools accept that path as a
video of a synthetic config (:func:`open_video`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional, Sequence

from rsanet.data.records import VideoRecord
from rsanet.data.synthetic import CLASS_NAMES, SPLITS, SyntheticDecoder, SyntheticSpec, video_label

VIDEO_EXT = ""  # generated: no files
DROP_MISSING = False  # generated: nothing can be missing
read_classes = None  # no label file: the class names are the motions (rsanet.data.synthetic.CLASS_NAMES)

PREFIX = "synthetic://"  # the path of a generated video: synthetic://<split>/<index>
_PATH = re.compile(r"^synthetic://(train|val|test)/(\d+)$")


@dataclass
class SyntheticConfig:
    """``data.synthetic``: size and draw of the generated benchmark (read when ``data.dataset`` is synthetic)."""

    train_size: int = 4000  # number of training clips
    val_size: int = 800  # number of validation clips, and of held-out test clips
    frames: int = 16  # frames in each generated video
    resolution: list[int] = field(default_factory=lambda: [64, 64])  # generated H x W
    classes: int = 8  # number of motion classes: the first K of rsanet.data.synthetic.CLASS_NAMES
    seed: int = 0  # seed; videos are a pure function of (seed, split, index)


def spec(cfg) -> SyntheticSpec:
    """The generator's spec from a config's ``data.synthetic`` section."""
    s = cfg.data.synthetic
    height, width = s.resolution
    return SyntheticSpec(seed=s.seed, frames=s.frames, height=height, width=width, num_classes=s.classes)


def defaults(data) -> tuple[int, str]:
    return data.synthetic.classes, "auto"  # one output per motion class; no files, so no backend


def check(data) -> Optional[str]:
    s = data.synthetic
    if s.train_size <= 0 or s.val_size <= 0:
        return f"`data.synthetic.train_size` and `data.synthetic.val_size` must be positive, got {s.train_size}, " \
               f"{s.val_size}"
    if len(s.resolution) != 2 or min(s.resolution) < 16:
        return f"`data.synthetic.resolution` needs [H, W], each at least 16, got {s.resolution}"
    if s.frames < 2:
        return f"`data.synthetic.frames` must be at least 2, got {s.frames}"
    if not 2 <= s.classes <= len(CLASS_NAMES):
        return f"`data.synthetic.classes` must be in 2..{len(CLASS_NAMES)}, got {s.classes}"
    return None


def resolve(cfg, splits: Sequence[str]) -> list[tuple[str, str]]:
    return []  # defaults() decided everything


def has_split(data, split: str) -> bool:
    return split in SPLITS  # every split is generated


def class_names(cfg) -> list[str]:
    return spec(cfg).classes


def records(cfg, split: str, classes: list[str]) -> list[VideoRecord]:
    """``train``: ``data.synthetic.train_size`` clips; ``val`` and ``test``: ``val_size`` clips each."""
    if split not in SPLITS:
        raise ValueError(f"unknown synthetic split {split!r}; expected one of {sorted(SPLITS)}")
    s = spec(cfg)
    size = cfg.data.synthetic.train_size if split == "train" else cfg.data.synthetic.val_size
    return [VideoRecord(path=f"{PREFIX}{split}/{i}", num_frames=s.frames, label=video_label(s, i),
                        video_id=f"{split}/{i}") for i in range(size)]


def decoder(cfg) -> SyntheticDecoder:
    return SyntheticDecoder(spec(cfg))


def open_video(cfg, path: str) -> Optional[tuple[SyntheticDecoder, VideoRecord]]:
    """``synthetic://<split>/<index>``: that generated video of the config's benchmark."""
    if not _PATH.match(path):
        return None
    s = spec(cfg)
    return SyntheticDecoder(s), VideoRecord(path=path, num_frames=s.frames, video_id=path)
