"""FineGym's two-stage cut: events from the YouTube videos, then sub-action clips from the events (see
:mod:`rsanet.prep`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from rsanet.data.records import VIDEO_EXTS
from rsanet.prep.jobs import partial_path

__all__ = ["Cut", "finegym_cut_plan", "cut_command", "read_clip_ids"]


@dataclass(frozen=True)
class Cut:
    """Cut ``src`` from ``start`` to ``end`` seconds into ``dst``."""

    src: Path
    dst: Path
    start: float
    end: float


def _span(entry: dict, where: str) -> tuple[float, float]:
    stamps = entry.get("timestamps")
    if not stamps or not all(isinstance(s, (list, tuple)) and len(s) == 2 for s in stamps):
        raise ValueError(f"{where}: expected 'timestamps' as a list of [start, end] pairs, got {stamps!r}")
    start, end = float(stamps[0][0]), float(stamps[-1][1])
    if end <= start:
        raise ValueError(f"{where}: empty time span [{start}, {end}]")
    return start, end


def finegym_cut_plan(annotation: dict, raw_dir: Path, event_dir: Path, clip_dir: Path,
                     only: Optional[set[str]] = None, ext: str = "mp4") -> tuple[list[Cut], list[Cut], list[str]]:
    """(event cuts, sub-action cuts, YouTube ids without a raw video) from the FineGym annotation JSON.

    ``annotation`` maps ``youtube id -> {event id: {"timestamps": [[s, e]], "segments": {action id:
    {"timestamps": [[s, e], ...]}}}}``. ``only`` restricts the sub-actions to these clip ids (e.g. those of the
    element files) and the events to the ones they need.
    """
    listing = {p.stem: p for p in raw_dir.iterdir() if p.suffix.lower() in VIDEO_EXTS} if raw_dir.is_dir() else {}
    events, actions, missing = [], [], []
    for yt, yt_events in sorted(annotation.items()):
        raw = listing.get(yt)
        needed_here = []
        for event_id, event in sorted((yt_events or {}).items()):
            event_name = f"{yt}_{event_id}"
            wanted = []
            for action_id, action in sorted((event.get("segments") or {}).items()):
                clip_id = f"{event_name}_{action_id}"
                if only is None or clip_id in only:
                    s, e = _span(action, clip_id)
                    wanted.append(Cut(event_dir / f"{event_name}.{ext}", clip_dir / f"{clip_id}.{ext}", s, e))
            if wanted:
                s, e = _span(event, event_name)
                needed_here.append((Cut(raw, event_dir / f"{event_name}.{ext}", s, e) if raw else None, wanted))
        if not needed_here:
            continue
        if raw is None:
            missing.append(yt)
            continue
        for event_cut, wanted in needed_here:
            events.append(event_cut)
            actions.extend(wanted)
    return events, actions, missing


def cut_command(ffmpeg: str, cut: Cut) -> list[str]:
    """Frame-accurate re-encoding cut (H.264, no audio), written to ``partial_path(cut.dst)`` (see :func:`run_jobs`)."""
    return [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-ss", f"{cut.start:.3f}",
            "-i", str(cut.src), "-t", f"{cut.end - cut.start:.3f}", "-map", "0:v:0", "-c:v", "libx264",
            "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p", "-an", str(partial_path(cut.dst, False))]


def read_clip_ids(paths: Sequence[Path]) -> set[str]:
    """Clip ids (first field) of FineGym element files."""
    ids = set()
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"element file not found: {path}")
        ids.update(line.split()[0] for line in Path(path).read_text().splitlines() if line.strip())
    return ids
