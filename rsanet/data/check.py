"""Dataset checks: the start-up checks shared by training, testing and ``tools/check_dataset.py``, and the
full health check that decodes every video.

Start-up (cheap: one directory listing per folder, no decoding):

* :func:`resolve_from_files` fills in what a dataset leaves to its files (a ``list`` dataset: ``model.num_classes:
  0`` is the label file's count, else the largest label + 1, and ``data.backend: auto`` is frames for folders,
  video for files), and checks the values a config does set against them;
* :func:`check_train_labels` refuses a training split with unlabelled (-1) entries;
* :func:`check_entries` refuses a split whose entries are of the other backend's kind, or of which more
  than ``data.max_bad_fraction`` are missing.

:func:`check_dataset` (``tools/check_dataset.py``) samples, decodes and transforms each video's first view
exactly as in training or testing (no replacement), optionally in DataLoader worker processes.
"""
from __future__ import annotations

import glob
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from torch.utils.data import DataLoader, Dataset

from rsanet.data.datasets import VideoDataset
from rsanet.data.decoders import FrameFolderDecoder
from rsanet.data.sets import dataset_module
from rsanet.data.sets.common import entry_kinds

__all__ = ["CheckReport", "check_dataset", "format_report", "resolve_from_files", "check_train_labels",
           "check_entries", "entry_kinds"]

Note = tuple[str, str]  # (level "info" | "warning", message) for the run's log


# ------------------------------------------------------------------------------------------ start-up
def resolve_from_files(cfg, splits: Sequence[str]) -> list[Note]:
    """Settle, in place, what the config leaves to the dataset's files (a list dataset's ``model.num_classes:
    0`` and ``data.backend: auto``; its module's ``resolve``) and check the values the config sets against
    them (a mismatch raises ValueError naming what to set). Returns the notes to log. Datasets whose class
    count and backend are known when the config is loaded need nothing here."""
    return dataset_module(cfg.data.dataset).resolve(cfg, splits)


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
    if root is None:  # generated data: nothing on disk
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
    missing: list[str] = field(default_factory=list)  # listed but absent, dropped at start-up (DROP_MISSING)

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
