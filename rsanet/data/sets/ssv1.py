"""Something-Something V1: JPEG frame folders and the official CSV files.

Annotation files: ``<id>;<class name>`` lines (the test CSV has ``<id>`` alone: label -1). Label file
``something-something-v1-labels.csv``: the 174 names, one per line. The class index is the position of the
name in the **alphabetically sorted** list, which equals the SS-V2 labels.json order (``data/ssv1/README.md``).
Samples are ``<id>`` (frame folder) or ``<id>.<ext>`` under ``data.root``.
"""
from __future__ import annotations

from pathlib import Path

from rsanet.data.labels import read_class_list
from rsanet.data.records import VideoRecord
from rsanet.data.sets import common
from rsanet.data.sets.common import check, decoder, has_split, open_video, resolve  # noqa: F401  (protocol)

VIDEO_EXT = "webm"  # the frames were released; videos extracted from the WebM source keep its extension
DROP_MISSING = False  # a missing frame folder counts as unreadable


def defaults(data) -> tuple[int, str]:
    return 174, "frames"  # 174 classes; released as JPEG frame folders


def read_classes(label_file: str | Path) -> list[str]:
    """The 174 names of ``something-something-v1-labels.csv``, sorted alphabetically (the pinned order)."""
    return sorted(read_class_list(common.open_file(label_file)))


def read_records(annotation_file: str | Path, classes: list[str], backend: str = "frames",
                 ext: str = VIDEO_EXT) -> list[VideoRecord]:
    """``<id>;<class name>`` lines (the test CSV has ``<id>`` alone, label -1)."""
    path = common.open_file(annotation_file)
    index = {name: i for i, name in enumerate(classes)}
    records = []
    for n, line in common.text_lines(path):
        vid, _, name = (part.strip() for part in line.partition(";"))
        label = common.label_of(index, name or None, f"{path}:{n}")
        records.append(VideoRecord(common.media_path(vid, backend, ext), 0, label, video_id=vid))
    return records


def class_names(cfg) -> list[str]:
    return common.official_class_names(cfg, read_classes)


def records(cfg, split: str, classes: list[str]) -> list[VideoRecord]:
    return common.official_records(cfg, split, classes, read_records, VIDEO_EXT)
