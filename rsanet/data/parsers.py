"""Readers of the official annotation and label files, each returning ``(records, classes)``.

Every reader takes the file as downloaded and builds :class:`~rsanet.data.records.VideoRecord` entries whose
``path`` is relative to ``data.root``: ``<id>`` (a frame folder) for the frames backend and ``<id>.<ext>``
for the video backend. The formats (``../shared/notes/datasets.md``) and the pinned class orders:

* SS-V1: ``<id>;<class name>`` lines (test: ``<id>``); the labels CSV lists the 174 names. The class index
  is the position of the name in the **alphabetically sorted** list, which equals the SS-V2 labels.json
  order (see ``data/ssv1/README.md``).
* SS-V2: JSON lists of ``{"id", "template", ...}``; the class is ``labels[template without "[" and "]"]``
  from the labels JSON (``{name: "index"}``); classes are ordered by that index.
* Diving-48 (V2): JSON lists of ``{"vid_name", "label", "start_frame", "end_frame"}``; the clip is
  ``rgb/<vid_name>``. ``end_frame`` is taken as **exclusive**, so that no frame outside the annotated span
  is ever read. Class names join the four vocab entries with "+".
* FineGym: ``<clip id> <label>`` lines; names from the categories file (``Clabel: i; set: s; Glabel: g;
  <name>``), ordered by Clabel. The clip file is ``<clip id>.<ext>`` (or the frame folder ``<clip id>``).
* list: ``<path> <num_frames> <label>`` lines (TSN, mmaction2 "rawframes") or ``<path> <label>`` lines
  (mmaction2 "videos"; the frame count is then found when the sample is decoded). A line whose last two
  fields are integers is read as the first form. The path may contain spaces; a label of -1 means
  unlabelled. Names come from an optional one-per-line class list, otherwise ``"0" .. "N-1"``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Optional

from rsanet.data.labels import AnnotationError, check_unique_names, read_class_list
from rsanet.data.records import VideoRecord

__all__ = [
    "media_path", "read_ssv1_classes", "read_ssv1", "read_ssv2_classes", "read_ssv2", "read_diving48_classes",
    "read_diving48", "read_gym_classes", "read_gym", "read_list", "read_list_classes", "read_dataset_classes",
    "read_annotations", "parse_list_line",
]

_GYM_CATEGORY = re.compile(r"^\s*Clabel:\s*(\d+)\s*;\s*set:\s*(\d+)\s*;\s*Glabel:\s*(\d+)\s*;\s*(.+?)\s*$")


def media_path(stem: str, backend: str, ext: str) -> str:
    """Path of a sample relative to the root: the frame folder ``stem``, or the video file ``stem.ext``."""
    if backend == "frames":
        return stem
    return f"{stem}.{ext.lstrip('.')}"


def _open(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    return path


def _lines(path: Path) -> list[tuple[int, str]]:
    text = path.read_text(encoding="utf-8-sig")
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}: not valid JSON: {e}") from None


def _json_list(path: Path) -> list[dict]:
    data = _json(path)
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise AnnotationError(f"{path}: expected a JSON list of objects")
    return data


# ----------------------------------------------------------------------------------------------- SS-V1
def read_ssv1_classes(label_file: str | Path) -> list[str]:
    """The 174 names of ``something-something-v1-labels.csv``, sorted alphabetically (the pinned order)."""
    return sorted(read_class_list(_open(label_file)))


def read_ssv1(annotation_file: str | Path, classes: list[str], backend: str = "frames",
              ext: str = "webm") -> list[VideoRecord]:
    """``<id>;<class name>`` lines (the test CSV has ``<id>`` alone, label -1)."""
    path = _open(annotation_file)
    index = {name: i for i, name in enumerate(classes)}
    records = []
    for n, line in _lines(path):
        vid, _, name = (part.strip() for part in line.partition(";"))
        label = -1
        if name:
            if name not in index:
                raise AnnotationError(f"{path}:{n}: unknown class {name!r} (not in the labels file)")
            label = index[name]
        records.append(VideoRecord(media_path(vid, backend, ext), 0, label, video_id=vid))
    return records


# ----------------------------------------------------------------------------------------------- SS-V2
def read_ssv2_classes(label_file: str | Path) -> list[str]:
    """``something-something-v2-labels.json`` (``{name: "index"}``) as a list ordered by index."""
    path = _open(label_file)
    data = _json(path)
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected a JSON object mapping class names to indices")
    try:
        order = {int(i): name for name, i in data.items()}
    except (TypeError, ValueError):
        raise AnnotationError(f"{path}: class indices must be integers (as strings)") from None
    if sorted(order) != list(range(len(data))):
        raise AnnotationError(f"{path}: class indices must be 0..{len(data) - 1}, each once")
    return [order[i] for i in range(len(data))]


def read_ssv2(annotation_file: str | Path, classes: list[str], backend: str = "video",
              ext: str = "webm") -> list[VideoRecord]:
    """JSON list of ``{"id", "template"}``; the class is the template with ``[`` and ``]`` removed."""
    path = _open(annotation_file)
    index = {name: i for i, name in enumerate(classes)}
    records = []
    for n, entry in enumerate(_json_list(path)):
        if "id" not in entry:
            raise AnnotationError(f"{path}: entry {n} has no 'id'")
        vid = str(entry["id"])
        label = -1
        if "template" in entry:
            name = entry["template"].replace("[", "").replace("]", "")
            if name not in index:
                raise AnnotationError(f"{path}: entry {n} (id {vid}): template {name!r} is not in the labels file")
            label = index[name]
        records.append(VideoRecord(media_path(vid, backend, ext), 0, label, video_id=vid))
    return records


# ------------------------------------------------------------------------------------------- Diving-48
def read_diving48_classes(label_file: str | Path) -> list[str]:
    """``Diving48_vocab.json``: 48 lists of (takeoff, somersault, twist, flight), joined with "+"."""
    path = _open(label_file)
    data = _json(path)
    if not isinstance(data, list) or not all(isinstance(v, list) and v for v in data):
        raise AnnotationError(f"{path}: expected a JSON list of sub-label lists")
    names = ["+".join(str(part) for part in entry) for entry in data]
    check_unique_names(names, path)
    return names


def read_diving48(annotation_file: str | Path, classes: list[str], backend: str = "video",
                  ext: str = "mp4") -> list[VideoRecord]:
    """``Diving48_V2_*.json``; clip ``rgb/<vid_name>``, frames ``[start_frame, end_frame)`` (end exclusive)."""
    path = _open(annotation_file)
    records = []
    for n, entry in enumerate(_json_list(path)):
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
        records.append(VideoRecord(media_path(f"rgb/{vid}", backend, ext), 0, label, start, end, vid))
    return records


# --------------------------------------------------------------------------------------------- FineGym
def read_gym_classes(label_file: str | Path) -> list[str]:
    """``gym99_categories.txt`` / ``gym288_categories.txt``: names ordered by Clabel (0..N-1), duplicates kept."""
    path = _open(label_file)
    by_label = {}
    for n, line in _lines(path):
        m = _GYM_CATEGORY.match(line)
        if m is None:
            raise AnnotationError(f"{path}:{n}: expected 'Clabel: i; set: s; Glabel: g; name', got {line!r}")
        clabel = int(m.group(1))
        if clabel in by_label:
            raise AnnotationError(f"{path}:{n}: Clabel {clabel} appears twice")
        by_label[clabel] = m.group(4)
    if sorted(by_label) != list(range(len(by_label))):
        raise AnnotationError(f"{path}: Clabel values must be 0..{len(by_label) - 1}, each once")
    # Names are not unique in the release (Gym99 classes 58 and 70 are both "(BB) salto backward tucked",
    # in different element sets): the class is its Clabel.
    return [by_label[i] for i in range(len(by_label))]


def read_gym(annotation_file: str | Path, classes: list[str], backend: str = "video",
             ext: str = "mp4") -> list[VideoRecord]:
    """``gym*_element*.txt``: ``<clip id> <label>`` lines; the clip is ``<clip id>.<ext>``."""
    path = _open(annotation_file)
    records = []
    for n, line in _lines(path):
        parts = line.split()
        if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
            raise AnnotationError(f"{path}:{n}: expected '<clip id> <label>', got {line!r}")
        label = int(parts[1])
        if not 0 <= label < len(classes):
            raise AnnotationError(f"{path}:{n}: label {label} is outside 0..{len(classes) - 1}")
        records.append(VideoRecord(media_path(parts[0], backend, ext), 0, label, video_id=parts[0]))
    return records


# ------------------------------------------------------------------------------------------------ list
def _is_int(text: str) -> bool:
    return re.fullmatch(r"-?[0-9]+", text) is not None


def parse_list_line(line: str) -> Optional[tuple[str, int, int]]:
    """``(path, num_frames, label)`` of a list line, ``num_frames`` 0 when the line is ``<path> <label>``;
    None when the line is neither form."""
    parts = line.rsplit(None, 2)
    if len(parts) == 3 and parts[1].isdigit() and _is_int(parts[2]):
        return parts[0], int(parts[1]), int(parts[2])
    parts = line.rsplit(None, 1)
    if len(parts) == 2 and _is_int(parts[1]):
        return parts[0], 0, int(parts[1])
    return None


def read_list(annotation_file: str | Path, classes: Optional[list[str]], backend: str = "frames",
              ext: str = "", classes_from: str = "") -> list[VideoRecord]:
    """List file: ``<path> <num_frames> <label>`` or ``<path> <label>`` per line; paths are used as written.

    Labels must lie in ``-1 .. len(classes) - 1`` (``classes=None``: any label >= -1); ``classes_from`` says
    where the class count came from, for the error message.
    """
    path = _open(annotation_file)
    records = []
    for n, line in _lines(path):
        entry = parse_list_line(line)
        if entry is None:
            raise AnnotationError(f"{path}:{n}: expected '<path> <num_frames> <label>' or '<path> <label>', "
                                  f"got {line!r}")
        file, frames, label = entry
        if label < -1 or (classes is not None and label >= len(classes)):
            raise AnnotationError(f"{path}:{n}: label {label} is outside 0..{len(classes or []) - 1} "
                                  f"({classes_from or 'the class list'}); -1 marks an unlabelled video")
        records.append(VideoRecord(file, frames, label, video_id=file))
    return records


def read_list_classes(label_file: Optional[str | Path], num_classes: int) -> list[str]:
    """The class list of a list-file dataset: ``label_file`` (one name per line) or ``"0" .. "N-1"``."""
    if label_file:
        return read_class_list(_open(label_file))
    return [str(i) for i in range(num_classes)]


# ----------------------------------------------------------------------------------------- dispatcher
def _readers(dataset: str) -> tuple[Callable, Callable, str]:
    """(class reader, record reader, default video extension) of an official dataset format."""
    if dataset == "ssv1":
        return read_ssv1_classes, read_ssv1, "webm"
    if dataset == "ssv2":
        return read_ssv2_classes, read_ssv2, "webm"
    if dataset == "diving48":
        return read_diving48_classes, read_diving48, "mp4"
    if dataset in ("gym99", "gym288"):
        return read_gym_classes, read_gym, "mp4"
    raise ValueError(f"unknown dataset {dataset!r}; expected ssv1, ssv2, diving48, gym99, gym288 or list")


def read_dataset_classes(dataset: str, label_file: str | Path) -> list[str]:
    """Class names of ``dataset`` in the pinned order, read from its official label file."""
    return _readers(dataset)[0](label_file)


def read_annotations(dataset: str, annotation_file: str | Path, label_file: Optional[str | Path],
                     backend: str, ext: str = "", num_classes: int = 0) -> tuple[list[VideoRecord], list[str]]:
    """Records and classes of one split of ``dataset`` (ssv1 | ssv2 | diving48 | gym99 | gym288 | list)."""
    if dataset == "list":
        classes = read_list_classes(label_file, num_classes)
        where = (f"the {len(classes)} classes of data.label_file {label_file}" if label_file else
                 f"model.num_classes={num_classes}: set it higher, or to 0 to count the classes from the lists")
        return read_list(annotation_file, classes, backend, ext, where), classes
    read_classes, read_records, default_ext = _readers(dataset)
    if not label_file:
        raise ValueError(f"dataset {dataset!r} needs `data.label_file` (the official labels/vocab/categories file)")
    classes = read_classes(label_file)
    return read_records(annotation_file, classes, backend, ext or default_ext), classes
