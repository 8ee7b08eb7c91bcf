"""List files (``data.dataset: list``): your own videos, and the TSN / mmaction2 list formats.

A line is ``<path> <num_frames> <label>`` (TSN, mmaction2 "rawframes") or ``<path> <label>`` (mmaction2
"videos"; the frame count is then found when the sample is decoded). A line whose last two fields are integers
is read as the first form. The path may contain spaces; a label of -1 means unlabelled. Names come from an
optional one-per-line class list (``data.label_file``), otherwise ``"0" .. "N-1"``.

The files decide what the config leaves open (:func:`resolve`): ``model.num_classes: 0`` is the label file's
count, else the largest label + 1; ``data.backend: auto`` is ``frames`` when the entries are folders and
``video`` when they are files.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Sequence

from rsanet.data.labels import AnnotationError, read_class_list
from rsanet.data.records import VIDEO_EXTS, VideoRecord
from rsanet.data.sets import common
from rsanet.data.sets.common import check, decoder, has_split, open_video  # noqa: F401  (protocol)

VIDEO_EXT = ""  # paths are used as written, extension included
DROP_MISSING = False  # a missing entry counts as unreadable (refused beyond data.max_bad_fraction)

Note = tuple[str, str]  # (level "info" | "warning", message) for the run's log


def defaults(data) -> tuple[int, str]:
    return 0, "auto"  # both decided by the files (resolve)


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


def read_records(annotation_file: str | Path, classes: Optional[list[str]], backend: str = "frames",
                 ext: str = "", classes_from: str = "") -> list[VideoRecord]:
    """List file: ``<path> <num_frames> <label>`` or ``<path> <label>`` per line; paths are used as written.

    Labels must lie in ``-1 .. len(classes) - 1`` (``classes=None``: any label >= -1); ``classes_from`` says
    where the class count came from, for the error message.
    """
    path = common.open_file(annotation_file)
    records = []
    for n, line in common.text_lines(path):
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


def read_classes(label_file: str | Path) -> list[str]:
    """A one-per-line class list (line n is class n)."""
    return read_class_list(common.open_file(label_file))


def list_classes(label_file: Optional[str | Path], num_classes: int) -> list[str]:
    """The class list of a list-file dataset: ``label_file`` (one name per line) or ``"0" .. "N-1"``."""
    if label_file:
        return read_class_list(common.open_file(label_file))
    return [str(i) for i in range(num_classes)]


def class_names(cfg) -> list[str]:
    d = cfg.data
    if d.label_file:
        return list_classes(common.existing(d.label_file, "data.label_file", "label file"), 0)
    return list_classes(None, cfg.model.num_classes)


def records(cfg, split: str, classes: list[str]) -> list[VideoRecord]:
    d = cfg.data
    key = f"{split}_annotations"
    annotations = common.existing(getattr(d, key), f"data.{key}", "annotation file")
    where = (f"the {len(classes)} classes of data.label_file {d.label_file}" if d.label_file else
             f"model.num_classes={cfg.model.num_classes}: set it higher, or to 0 to count the classes from the lists")
    return read_records(annotations, classes, d.backend, d.video_ext, where)


# ------------------------------------------------------------------------ what the files decide
def _annotation_files(cfg, splits: Sequence[str]) -> dict[str, Path]:
    files = {s: getattr(cfg.data, f"{s}_annotations", None) for s in dict.fromkeys(splits)}
    return {s: Path(f).expanduser() for s, f in files.items() if f and Path(f).expanduser().is_file()}


def _resolve_classes(cfg, records: dict[str, list[VideoRecord]], lists: dict[str, Path]) -> list[Note]:
    """``model.num_classes``: from the label file, else the largest label + 1."""
    d, m = cfg.data, cfg.model
    if d.label_file:
        count = len(read_class_list(Path(d.label_file).expanduser()))
        if m.num_classes == 0:
            m.num_classes = count
            return [("info", f"model.num_classes={count}, the classes of data.label_file {d.label_file}")]
        if m.num_classes != count:
            raise ValueError(f"model.num_classes={m.num_classes}, but data.label_file {d.label_file} lists {count} "
                             f"classes: set model.num_classes={count} (or 0 to follow the label file)")
        return []
    top = {s: max((r.label for r in recs), default=-1) + 1 for s, recs in records.items()}
    needed = max(top.values(), default=0)
    names = " and ".join(str(lists[s]) for s in records)
    if m.num_classes == 0:
        if needed == 0:
            raise ValueError(f"model.num_classes is 0 (count the classes from the data), but there is no "
                             f"data.label_file and no labelled entry in {names or 'the lists'}: set model.num_classes "
                             "or data.label_file")
        m.num_classes = needed
        return [("info", f"model.num_classes={needed}: the largest label in {names} + 1 (no data.label_file)")]
    if needed > m.num_classes:
        split = max(top, key=top.get)
        raise ValueError(f"{lists[split]} has label {needed - 1}, beyond the classifier's {m.num_classes} outputs "
                         f"(model.num_classes={m.num_classes}): set model.num_classes={needed}, or 0 to count the "
                         "classes from the lists, or name them in data.label_file")
    if needed < m.num_classes:
        return [("warning", f"model.num_classes={m.num_classes}, but the labels of {names} only reach {needed - 1}: "
                            f"{m.num_classes - needed} of the classifier's outputs are never trained. Set "
                            f"model.num_classes={needed} (or 0, or name the classes in data.label_file)")]
    return []


def _resolve_backend(cfg, recs: list[VideoRecord], source: Path) -> list[Note]:
    """``data.backend`` from the entries (a folder: frames, a file: video)."""
    d = cfg.data
    root = Path(d.root).expanduser() if d.root else None
    sample = recs[:64]
    on_disk = root is not None and root.is_dir()
    kinds = set(common.entry_kinds(root, [r.path for r in sample])) - {None} if on_disk else set()
    if not kinds:  # nothing on disk yet: go by the file extensions (missing files are reported later)
        kinds = {"file" if Path(r.path).suffix.lower() in VIDEO_EXTS else "dir" for r in sample}
    if len(kinds) > 1:
        raise ValueError(f"{source} mixes frame folders and video files: use one kind per list")
    found = "frames" if kinds == {"dir"} else "video"
    if d.backend == "auto":
        d.backend = found
        return [("info", f"data.backend={found}: the entries of {source} are "
                         f"{'frame folders' if found == 'frames' else 'video files'}")]
    if d.backend != found:
        what = "frame folders" if found == "frames" else "video files"
        raise ValueError(f"data.backend is {d.backend!r}, but the entries of {source} are {what} (e.g. "
                         f"{sample[0].path}): set data.backend={found} (or auto)")
    return []


def resolve(cfg, splits: Sequence[str]) -> list[Note]:
    """Resolve ``model.num_classes: 0`` and ``data.backend: auto`` from the list files, in place, and check
    values the config sets (a mismatch raises ValueError naming what to set). The class count reads every
    split's list, the backend the first of ``splits`` that has one."""
    lists = _annotation_files(cfg, list(splits) + ["train", "val", "test"])  # a missing one fails later, in
    records = {s: read_records(p, None) for s, p in lists.items()}         # build_dataset, naming its key
    notes = _resolve_classes(cfg, records, lists)
    if records:
        split = next(iter(records))
        notes += _resolve_backend(cfg, records[split], lists[split])
    elif cfg.data.backend == "auto":
        cfg.data.backend = "frames"
    return notes
