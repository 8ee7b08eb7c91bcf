"""Something-Something V2: WebM videos and the official JSON files.

Annotation files: JSON lists of ``{"id", "template", ...}``; the class is ``labels[template without "[" and
"]"]`` from the labels JSON (``{name: "index"}``), and classes are ordered by that index. The test list has
no template (label -1). Samples are ``<id>.webm`` (or the frame folder ``<id>``) under ``data.root``.
"""
from __future__ import annotations

from pathlib import Path

from rsanet.data.labels import AnnotationError
from rsanet.data.records import VideoRecord
from rsanet.data.sets import common
from rsanet.data.sets.common import check, decoder, has_split, open_video, resolve  # noqa: F401  (protocol)

VIDEO_EXT = "webm"  # the release's container
DROP_MISSING = False  # a missing video counts as unreadable


def defaults(data) -> tuple[int, str]:
    return 174, "video"  # 174 classes; released as WebM videos


def read_classes(label_file: str | Path) -> list[str]:
    """``something-something-v2-labels.json`` (``{name: "index"}``) as a list ordered by index."""
    path = common.open_file(label_file)
    data = common.read_json(path)
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected a JSON object mapping class names to indices")
    try:
        order = {int(i): name for name, i in data.items()}
    except (TypeError, ValueError):
        raise AnnotationError(f"{path}: class indices must be integers (as strings)") from None
    if sorted(order) != list(range(len(data))):
        raise AnnotationError(f"{path}: class indices must be 0..{len(data) - 1}, each once")
    return [order[i] for i in range(len(data))]


def read_records(annotation_file: str | Path, classes: list[str], backend: str = "video",
                 ext: str = VIDEO_EXT) -> list[VideoRecord]:
    """JSON list of ``{"id", "template"}``; the class is the template with ``[`` and ``]`` removed."""
    path = common.open_file(annotation_file)
    index = {name: i for i, name in enumerate(classes)}
    records = []
    for n, entry in enumerate(common.json_list(path)):
        if "id" not in entry:
            raise AnnotationError(f"{path}: entry {n} has no 'id'")
        vid = str(entry["id"])
        name = entry["template"].replace("[", "").replace("]", "") if "template" in entry else None
        label = common.label_of(index, name, f"{path}: entry {n} (id {vid})")
        records.append(VideoRecord(common.media_path(vid, backend, ext), 0, label, video_id=vid))
    return records


def class_names(cfg) -> list[str]:
    return common.official_class_names(cfg, read_classes)


def records(cfg, split: str, classes: list[str]) -> list[VideoRecord]:
    return common.official_records(cfg, split, classes, read_records, VIDEO_EXT)
