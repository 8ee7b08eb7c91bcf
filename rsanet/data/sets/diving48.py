"""Diving-48 (V2 labels): MP4 videos and the official JSON files.

Annotation files ``Diving48_V2_{train,test}.json``: JSON lists of ``{"vid_name", "label", "start_frame",
"end_frame"}``; the clip is ``rgb/<vid_name>`` under ``data.root``. ``end_frame`` is taken as **exclusive**,
so that no frame outside the annotated span is ever read. Class names (``Diving48_vocab.json``: 48 lists of
takeoff, somersault, twist, flight) join the four entries with "+".
"""
from __future__ import annotations

from pathlib import Path

from rsanet.data.labels import AnnotationError, check_unique_names
from rsanet.data.records import VideoRecord
from rsanet.data.sets import common
from rsanet.data.sets.common import check, decoder, has_split, open_video, resolve  # noqa: F401  (protocol)

VIDEO_EXT = "mp4"  # the release's container
DROP_MISSING = False  # a missing video counts as unreadable


def defaults(data) -> tuple[int, str]:
    return 48, "video"  # 48 dive classes; released as MP4 videos


def read_classes(label_file: str | Path) -> list[str]:
    """``Diving48_vocab.json``: 48 lists of (takeoff, somersault, twist, flight), joined with "+"."""
    path = common.open_file(label_file)
    data = common.read_json(path)
    if not isinstance(data, list) or not all(isinstance(v, list) and v for v in data):
        raise AnnotationError(f"{path}: expected a JSON list of sub-label lists")
    names = ["+".join(str(part) for part in entry) for entry in data]
    check_unique_names(names, path)
    return names


def read_records(annotation_file: str | Path, classes: list[str], backend: str = "video",
                 ext: str = VIDEO_EXT) -> list[VideoRecord]:
    """``Diving48_V2_*.json``; clip ``rgb/<vid_name>``, frames ``[start_frame, end_frame)`` (end exclusive)."""
    path = common.open_file(annotation_file)
    records = []
    for n, entry in enumerate(common.json_list(path)):
        missing = {"vid_name", "label"} - set(entry)
        if missing:
            raise AnnotationError(f"{path}: entry {n} lacks {sorted(missing)}")
        vid, label = str(entry["vid_name"]), int(entry["label"])
        if not 0 <= label < len(classes):
            raise AnnotationError(f"{path}: entry {n} ({vid}) has label {label}, outside 0..{len(classes) - 1}")
        start = int(entry.get("start_frame", 0))
        end = entry.get("end_frame")
        end = None if end is None else int(end)
        if start < 0 or (end is not None and end <= start):
            raise AnnotationError(f"{path}: entry {n} ({vid}) has an empty frame span [{start}, {end})")
        records.append(VideoRecord(common.media_path(f"rgb/{vid}", backend, ext), 0, label, start, end, vid))
    return records


def class_names(cfg) -> list[str]:
    return common.official_class_names(cfg, read_classes)


def records(cfg, split: str, classes: list[str]) -> list[VideoRecord]:
    return common.official_records(cfg, split, classes, read_records, VIDEO_EXT)
