"""What the file-based dataset modules share: reading annotation files, the paths of samples, and the members
of the dataset protocol (:mod:`rsanet.data.sets`) that are the same for every dataset stored as files.

A sample's path is relative to ``data.root``: ``<id>`` (a frame folder) for the frames backend and
``<id>.<ext>`` for the video backend, so the frame folder of a video is its path without the extension.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from rsanet.data.decoders import build_decoder
from rsanet.data.labels import AnnotationError
from rsanet.data.records import Decoder, VideoRecord

__all__ = ["media_path", "open_file", "text_lines", "read_json", "json_list", "existing", "entry_kinds",
           "official_class_names", "official_records", "check", "resolve", "has_split", "decoder", "open_video"]


# ----------------------------------------------------------------------------------------- file reading
def media_path(stem: str, backend: str, ext: str) -> str:
    """Path of a sample relative to the root: the frame folder ``stem``, or the video file ``stem.ext``."""
    if backend == "frames":
        return stem
    return f"{stem}.{ext.lstrip('.')}"


def label_of(index: dict[str, int], name: Optional[str], where: str) -> int:
    """The class id of ``name`` in ``index`` (name -> id); -1 for None (an unlabelled test entry); an
    AnnotationError naming ``where`` (the file and line or entry) for a name the labels file lacks."""
    if name is None:
        return -1
    if name not in index:
        raise AnnotationError(f"{where}: unknown class {name!r} (not in the labels file)")
    return index[name]


def open_file(path: str | Path) -> Path:
    """``path`` as a Path, or FileNotFoundError naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file not found: {path}")
    return path


def text_lines(path: Path) -> list[tuple[int, str]]:
    """``(1-based line number, stripped text)`` of every non-empty line (a UTF-8 BOM is ignored)."""
    text = path.read_text(encoding="utf-8-sig")
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise AnnotationError(f"{path}: not valid JSON: {e}") from None


def json_list(path: Path) -> list[dict]:
    data = read_json(path)
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise AnnotationError(f"{path}: expected a JSON list of objects")
    return data


def existing(value: Optional[str], key: str, kind: str) -> Path:
    """The file or folder a config key names, or FileNotFoundError naming the key."""
    if not value:
        raise FileNotFoundError(f"`{key}` is not set; it must name the {kind}")
    path = Path(value).expanduser()
    exists = path.is_dir() if kind.endswith("folder") else path.is_file()
    if not exists:
        raise FileNotFoundError(f"`{key}` {kind} not found: {path}")
    return path


def entry_kinds(root: Path, paths: Sequence[str], sample: int = 64) -> list[Optional[str]]:
    """``"dir"``, ``"file"`` or None (missing) for each of ``paths`` under ``root``. Presence comes from one
    listing per folder (names only); the kind is looked up for the first ``sample`` present entries and is
    ``"?"`` (present) for the others, so that a folder of 200k videos costs no 200k stat calls."""
    listings: dict[Path, set[str]] = {}
    kinds: list[Optional[str]] = []
    looked = 0
    for rel in paths:
        full = root / rel
        if full.parent not in listings:
            try:
                listings[full.parent] = set(os.listdir(full.parent))
            except OSError:
                listings[full.parent] = set()
        if full.name not in listings[full.parent]:
            kinds.append(None)
        elif looked < sample:
            looked += 1
            kinds.append("dir" if full.is_dir() else "file")
        else:
            kinds.append("?")
    return kinds


# ------------------------------------------------------------------------------- the dataset protocol
def official_class_names(cfg, read_classes: Callable[[Path], list[str]]) -> list[str]:
    """``class_names`` of a dataset whose classes come from its official label file (``data.label_file``)."""
    d = cfg.data
    if not d.label_file:
        raise ValueError(f"dataset {d.dataset!r} needs `data.label_file` (its official labels / vocab / categories "
                         "file, see data/README.md)")
    return read_classes(existing(d.label_file, "data.label_file", "label file"))


def official_records(cfg, split: str, classes: list[str], read_records: Callable[..., list[VideoRecord]],
                     video_ext: str) -> list[VideoRecord]:
    """``records`` of a file-based dataset: ``read_records(annotation file, classes, backend, ext)`` on the
    split's annotation file (``data.<split>_annotations``)."""
    d = cfg.data
    key = f"{split}_annotations"
    annotations = existing(getattr(d, key), f"data.{key}", "annotation file")
    return read_records(annotations, classes, d.backend, d.video_ext or video_ext)


def check(data) -> Optional[str]:
    """``check`` of a dataset whose only keys are the shared ``data.*`` keys: nothing to add."""
    return None


def resolve(cfg, splits: Sequence[str]) -> list[tuple[str, str]]:
    """``resolve`` of a dataset whose ``defaults`` decide everything: nothing is left to the files."""
    return []


def has_split(data, split: str) -> bool:
    """A split exists when the config names its annotation file."""
    return getattr(data, f"{split}_annotations", None) is not None


def decoder(cfg) -> Decoder:
    """Frame folders or video files under ``data.root`` (``data.backend``), checked to exist."""
    d = cfg.data
    root = existing(d.root, "data.root", "data folder")
    return build_decoder(d.backend, root, d.frame_template, d.frame_start)


def open_video(cfg, path: str) -> None:
    """Files and folders are read the same way for every dataset stored as files: nothing special here."""
    return None
