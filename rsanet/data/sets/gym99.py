"""FineGym Gym99: element-level sub-action clips (MP4, cut by ``tools/prepare_finegym.py``).

Annotation files ``gym99_{train,val}_element*.txt``: ``<clip id> <label>`` lines; the clip is
``<clip id>.<ext>`` (or the frame folder ``<clip id>``) under ``data.root``. Label file
``gym99_categories.txt``: ``Clabel: i; set: s; Glabel: g; <name>`` lines, ordered by Clabel. Names are not
unique in the release (classes 58 and 70 are both "(BB) salto backward tucked", in different element sets):
the class is its Clabel. Gym288 (``gym288.py``) reads the same formats.
"""
from __future__ import annotations

import re
from pathlib import Path

from rsanet.data.labels import AnnotationError
from rsanet.data.records import VideoRecord
from rsanet.data.sets import common
from rsanet.data.sets.common import check, decoder, has_split, open_video, resolve  # noqa: F401  (protocol)

VIDEO_EXT = "mp4"  # what tools/prepare_finegym.py writes
DROP_MISSING = True  # YouTube sources disappear: listed clips without a file are dropped at start-up, with a warning

_CATEGORY = re.compile(r"^\s*Clabel:\s*(\d+)\s*;\s*set:\s*(\d+)\s*;\s*Glabel:\s*(\d+)\s*;\s*(.+?)\s*$")


def defaults(data) -> tuple[int, str]:
    return 99, "video"  # 99 element classes; sub-action clips cut from the YouTube videos


def read_classes(label_file: str | Path) -> list[str]:
    """``gym99_categories.txt`` / ``gym288_categories.txt``: names ordered by Clabel (0..N-1), duplicates kept."""
    path = common.open_file(label_file)
    by_label = {}
    for n, line in common.text_lines(path):
        m = _CATEGORY.match(line)
        if m is None:
            raise AnnotationError(f"{path}:{n}: expected 'Clabel: i; set: s; Glabel: g; name', got {line!r}")
        clabel = int(m.group(1))
        if clabel in by_label:
            raise AnnotationError(f"{path}:{n}: Clabel {clabel} appears twice")
        by_label[clabel] = m.group(4)
    if sorted(by_label) != list(range(len(by_label))):
        raise AnnotationError(f"{path}: Clabel values must be 0..{len(by_label) - 1}, each once")
    return [by_label[i] for i in range(len(by_label))]


def read_records(annotation_file: str | Path, classes: list[str], backend: str = "video",
                 ext: str = VIDEO_EXT) -> list[VideoRecord]:
    """``gym*_element*.txt``: ``<clip id> <label>`` lines; the clip is ``<clip id>.<ext>``."""
    path = common.open_file(annotation_file)
    records = []
    for n, line in common.text_lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise AnnotationError(f"{path}:{n}: expected '<clip id> <label>', got {line!r}")
        label = int(parts[1])
        if not 0 <= label < len(classes):
            raise AnnotationError(f"{path}:{n}: label {label} is outside 0..{len(classes) - 1}")
        records.append(VideoRecord(common.media_path(parts[0], backend, ext), 0, label, video_id=parts[0]))
    return records


def class_names(cfg) -> list[str]:
    return common.official_class_names(cfg, read_classes)


def records(cfg, split: str, classes: list[str]) -> list[VideoRecord]:
    return common.official_records(cfg, split, classes, read_records, VIDEO_EXT)
