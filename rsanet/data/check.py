"""Dataset health check: decode every video through the real pipeline and report what is unreadable.

Used by ``tools/check_dataset.py``. Each video's first view is sampled, decoded and transformed exactly as
in training or testing (no replacement), optionally in DataLoader worker processes.
"""
from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

from torch.utils.data import DataLoader, Dataset

from rsanet.data.datasets import VideoDataset

__all__ = ["CheckReport", "check_dataset", "format_report"]


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
