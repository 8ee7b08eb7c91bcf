"""Dataset checks: the start-up checks shared by training, testing and ``tools/check_dataset.py``, and the
full health check that decodes every video.

Start-up (cheap: one directory listing per folder, no decoding):

* :func:`resolve_list` fills in what a ``list`` dataset leaves to its files: ``model.num_classes: 0`` (the
  label file's count, else the largest label + 1) and ``data.backend: auto`` (folders: frames, files:
  video), and checks the values a config does set against them;
* :func:`check_train_labels` refuses a training split with unlabelled (-1) entries;
* :func:`check_entries` refuses a split whose entries are of the other backend's kind, or of which more
  than ``data.max_bad_fraction`` are missing.

:func:`check_dataset` (``tools/check_dataset.py``) samples, decodes and transforms each video's first view
exactly as in training or testing (no replacement), optionally in DataLoader worker processes.
"""
from __future__ import annotations

import glob
import os
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from torch.utils.data import DataLoader, Dataset

from rsanet.data.datasets import VideoDataset
from rsanet.data.decoders import FrameFolderDecoder
from rsanet.data.labels import read_class_list
from rsanet.data.parsers import read_list
from rsanet.data.prepare import VIDEO_EXTS
from rsanet.data.records import VideoRecord

__all__ = ["CheckReport", "check_dataset", "format_report", "resolve_list", "check_train_labels", "check_entries",
           "entry_kinds"]

Note = tuple[str, str]  # (level "info" | "warning", message) for the run's log


# ------------------------------------------------------------------------------------------ start-up
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


def _annotation_files(cfg, splits: Sequence[str]) -> dict[str, Path]:
    files = {s: getattr(cfg.data, f"{s}_annotations", None) for s in dict.fromkeys(splits)}
    return {s: Path(f).expanduser() for s, f in files.items() if f and Path(f).expanduser().is_file()}


def _list_classes(cfg, records: dict[str, list[VideoRecord]], lists: dict[str, Path]) -> list[Note]:
    """``model.num_classes`` of a list dataset: from the label file, else the largest label + 1."""
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


def _list_backend(cfg, recs: list[VideoRecord], source: Path) -> list[Note]:
    """``data.backend`` of a list dataset from its entries (a folder: frames, a file: video)."""
    d = cfg.data
    root = Path(d.root).expanduser() if d.root else None
    sample = recs[:64]
    on_disk = root is not None and root.is_dir()
    kinds = set(entry_kinds(root, [r.path for r in sample])) - {None} if on_disk else set()
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


def resolve_list(cfg, splits: Sequence[str]) -> list[Note]:
    """Resolve ``model.num_classes: 0`` and ``data.backend: auto`` of a ``list`` dataset from its files, in
    place, and check values the config sets (a mismatch raises ValueError naming what to set). The class
    count reads every split's list, the backend the first of ``splits`` that has one. Returns the notes to
    log. Other datasets are left alone (:func:`rsanet.config.validate` resolved them)."""
    if cfg.data.dataset != "list":
        return []
    lists = _annotation_files(cfg, list(splits) + ["train", "val", "test"])  # a missing one fails later, in
    records = {s: read_list(p, None) for s, p in lists.items()}               # build_dataset, naming its key
    notes = _list_classes(cfg, records, lists)
    if records:
        split = next(iter(records))
        notes += _list_backend(cfg, records[split], lists[split])
    elif cfg.data.backend == "auto":
        cfg.data.backend = "frames"
    return notes


def check_train_labels(dataset: VideoDataset, source: str) -> None:
    """Refuse a training split with unlabelled entries (label -1): the loss has no target for them."""
    records = getattr(dataset, "records", None) or []
    unlabelled = [r.path for r in records if r.label < 0]
    if unlabelled:
        raise ValueError(f"{source}: {len(unlabelled)} of {len(records)} training entries have no label (-1), e.g. "
                         f"{unlabelled[:3]}: give them a label or remove those lines (-1 is for test lists)")


def _backend_hint(root: Path, paths: Sequence[str], want_dir: bool) -> str:
    """What to set when missing entries exist in the other backend's form (official datasets build the path
    from the backend: ``<id>`` for frames, ``<id>.<ext>`` for video)."""
    for rel in paths:
        full = root / rel
        if want_dir and full.parent.is_dir() and any(full.parent.glob(glob.escape(full.name) + ".*")):
            return ": they exist as video files, set data.backend=video"
        if not want_dir and full.suffix and full.with_suffix("").is_dir():
            return ": they exist as frame folders, set data.backend=frames"
    return ""


def check_entries(dataset: VideoDataset, split: str, source: str, max_fraction: float) -> list[Note]:
    """Refuse a split whose entries are of the wrong kind for the backend (a file for frames, a folder for
    video) or of which more than ``max_fraction`` are missing; warn about a few missing ones."""
    root = getattr(dataset.decoder, "root", None)
    if root is None:  # generated data (synthetic): nothing on disk
        return []
    want_dir = isinstance(dataset.decoder, FrameFolderDecoder)
    paths = [r.path for r in dataset.records]
    kinds = entry_kinds(Path(root), paths)
    wrong = [p for p, k in zip(paths, kinds) if k in ("dir", "file") and (k == "dir") != want_dir]
    if wrong:
        what, fix = ("video files", "video") if want_dir else ("frame folders", "frames")
        raise ValueError(f"{source}: the `{split}` entries are {what} (e.g. {Path(root) / wrong[0]}), but "
                         f"data.backend is {'frames' if want_dir else 'video'}: set data.backend={fix}")
    missing = [p for p, k in zip(paths, kinds) if k is None]
    if not missing:
        return []
    example = ", ".join(str(Path(root) / p) for p in missing[:3])
    if len(missing) > max_fraction * len(paths):
        raise ValueError(f"{source}: {len(missing)} of {len(paths)} `{split}` entries are missing under {root} "
                         f"(e.g. {example}){_backend_hint(Path(root), missing[:8], want_dir)}; that is more than "
                         f"data.max_bad_fraction={max_fraction}. `python tools/check_dataset.py --config <cfg> "
                         f"--split {split}` lists them all")
    return [("warning", f"{source}: {len(missing)} of {len(paths)} `{split}` entries are missing under {root} "
                        f"(e.g. {example}); they count as unreadable")]


@dataclass
class CheckReport:
    """What :func:`check_dataset` found."""

    classes: list[str]
    videos_per_class: dict[int, int]  # label -> videos listed in the split (-1: unlabelled)
    checked: int = 0
    frame_counts: list[int] = field(default_factory=list)  # frames of every readable checked video
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, error), in video order
    missing: list[str] = field(default_factory=list)  # listed but absent, dropped at start-up (FineGym)

    @property
    def ok(self) -> bool:
        return not self.unreadable and not self.missing


class _Inspect(Dataset):
    """Video index -> (video, frame count, error) through ``VideoDataset.inspect``."""

    def __init__(self, dataset: VideoDataset, count: int):
        self.dataset, self.count = dataset, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, video: int) -> tuple[int, Optional[int], Optional[str]]:
        frames, error = self.dataset.inspect(video)
        return video, frames, error


def _identity(item):
    return item


def check_dataset(dataset: VideoDataset, limit: Optional[int] = None, num_workers: int = 0,
                  progress: bool = False) -> CheckReport:
    """Decode the first ``limit`` videos (all by default) and collect counts, frame statistics and errors."""
    count = dataset.num_videos if limit is None else max(0, min(limit, dataset.num_videos))
    report = CheckReport(list(dataset.classes), dict(Counter(r.label for r in dataset.records)))
    report.missing = [dataset.location(r) for r in dataset.dropped]
    loader = DataLoader(_Inspect(dataset, count), batch_size=None, num_workers=num_workers, collate_fn=_identity)
    results = loader
    if progress:
        from tqdm import tqdm

        results = tqdm(loader, total=count, desc="checking", unit="video")
    for video, frames, error in results:
        report.checked += 1
        if error is None:
            report.frame_counts.append(frames)
        else:
            report.unreadable.append((dataset.location(video), error))
    return report


def format_report(report: CheckReport) -> str:
    """Human-readable summary: videos per class, frame-count statistics, every unreadable file."""
    lines = ["videos per class (as listed in the annotation file):"]
    width = max(len(str(k)) for k in report.videos_per_class)
    for label in sorted(report.videos_per_class):
        name = report.classes[label] if 0 <= label < len(report.classes) else "(no label)"
        lines.append(f"  {label:>{width}}  {report.videos_per_class[label]:>7}  {name}")
    counts = report.frame_counts
    lines.append(f"checked {report.checked} videos: {len(counts)} readable, {len(report.unreadable)} unreadable, "
                 f"{len(report.missing)} missing (dropped at start-up)")
    if counts:
        lines.append(f"frames per video: min {min(counts)}, median {statistics.median(counts):g}, "
                     f"mean {statistics.fmean(counts):.1f}, max {max(counts)}")
    for path in report.missing:
        lines.append(f"MISSING     {path}")
    for path, error in report.unreadable:
        lines.append(f"UNREADABLE  {path}  ({error})")
    return "\n".join(lines)
