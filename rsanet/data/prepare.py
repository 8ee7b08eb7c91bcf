"""Dataset preparation: frame extraction, list files, and FineGym clip cutting.

The logic lives here (testable without ffmpeg); ``tools/prepare_*.py`` and ``tools/make_list.py`` are the
command-line entry points.

* Frames: ``ffmpeg -i <video> -vf scale=-1:<height> -q:v 1 -start_number <frame_start> <out>/%05d.jpg``,
  one folder per video, mirroring the video tree (``rgb/x.mp4`` -> ``rgb/x/00001.jpg``), so that the frames
  backend finds each sample where the video backend found its file, minus the extension. Without the ffmpeg
  binary, :func:`extract_frames_python` decodes with PyAV (else decord) and writes the JPEGs with Pillow
  (slower; same layout and frame size).
* Own videos: :func:`class_folder_lists` turns ``<root>/<class>/<clip>`` (video files or frame folders)
  into a class list and ``<path> <label>`` train / val lines.
* Lists: ``<path> <num_frames> <label>`` lines from an annotation split and the real frame counts.
* FineGym, two stages as in the release: each event is cut from its YouTube video at the event's absolute
  timestamps (``<yt>_E_xxxxxx_yyyyyy.mp4``), then each sub-action from its event clip at the timestamps
  relative to the event start, from the first stage's start to the last stage's end
  (``<yt>_E_xxxxxx_yyyyyy_A_aaaa_bbbb.mp4``, the clip id of the element files). Cuts re-encode (H.264,
  no audio), so they are frame accurate.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

from rsanet.data.records import VideoRecord

__all__ = ["find_ffmpeg", "ffmpeg_pattern", "extract_frames_command", "frame_jobs", "partial_path", "run_jobs",
           "count_frames", "list_line", "Cut", "finegym_cut_plan", "cut_command", "read_clip_ids",
           "python_decoder", "extract_frames_python", "class_folder_lists"]

VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")


def find_ffmpeg(name: str = "ffmpeg") -> str:
    """Path of the ffmpeg executable, or a RuntimeError that says how to install it."""
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"`{name}` was not found on PATH. Install it first (e.g. `apt-get install ffmpeg` "
                           "or `conda install -c conda-forge ffmpeg`), or pass --ffmpeg /path/to/ffmpeg.")
    return path


def ffmpeg_pattern(frame_template: str) -> str:
    """``data.frame_template`` (Python format, e.g. ``{:05d}.jpg``) as an ffmpeg pattern (``%05d.jpg``)."""
    pattern, count = re.subn(r"\{(?::0?(\d*)d)?\}", lambda m: f"%0{m.group(1)}d" if m.group(1) else "%d",
                             frame_template)
    if count != 1 or "{" in pattern or "}" in pattern:
        raise ValueError(f"frame template {frame_template!r} must hold exactly one {{}} or {{:0Nd}} field")
    return pattern


def extract_frames_command(ffmpeg: str, video: Path, out_dir: Path, height: int = 256, quality: int = 1,
                           frame_template: str = "{:05d}.jpg", frame_start: int = 1) -> list[str]:
    """The ffmpeg command that writes every frame of ``video`` as JPEG into ``out_dir``."""
    return [ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(video),
            "-vf", f"scale=-1:{height}", "-q:v", str(quality), "-start_number", str(frame_start),
            str(out_dir / ffmpeg_pattern(frame_template))]


def python_decoder() -> str:
    """The Python library :func:`extract_frames_python` decodes with: ``"av"`` (PyAV) or ``"decord"``."""
    import importlib.util
    for name in ("av", "decord"):
        try:
            if importlib.util.find_spec(name) is not None:
                return name
        except ValueError:  # a module set to None in sys.modules
            continue
    raise RuntimeError("extracting frames needs the ffmpeg binary, PyAV (`pip install av`) or decord")


def _decoded_frames(video: Path, library: str):
    """RGB uint8 frames (H, W, 3) of ``video``, in order."""
    if library == "av":
        import av
        with av.open(str(video)) as container:
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="rgb24")
        return
    from decord import VideoReader, cpu
    reader = VideoReader(str(video), num_threads=1, ctx=cpu(0))
    for i in range(len(reader)):
        yield reader[i].asnumpy()


def extract_frames_python(video: Path, out_dir: Path, height: int = 256, quality: int = 1,
                          frame_template: str = "{:05d}.jpg", frame_start: int = 1, library: str = "") -> int:
    """Every frame of ``video`` as JPEG in ``out_dir``, scaled to ``height`` keeping the aspect ratio (as
    ffmpeg's ``scale=-1:<height>``), without the ffmpeg binary. ``quality`` is ffmpeg's ``-q:v`` (1 best .. 31),
    mapped to Pillow's 95 .. 5. Returns the number of frames written."""
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    pil_quality = int(round(95 - (min(max(quality, 1), 31) - 1) * 3))
    count = 0
    for count, frame in enumerate(_decoded_frames(video, library or python_decoder()), 1):
        image = Image.fromarray(frame)
        width = max(1, int(round(image.width * height / image.height)))
        if image.size != (width, height):
            image = image.resize((width, height), Image.BILINEAR)
        image.save(out_dir / frame_template.format(frame_start + count - 1), quality=pil_quality)
    if count == 0:
        raise RuntimeError(f"no frame of {video} decodes")
    return count


def frame_jobs(video_root: Path, frame_root: Path, exts: Sequence[str] = VIDEO_EXTS,
               skip_done: bool = True) -> list[tuple[Path, Path]]:
    """(video, frame folder) pairs for every video under ``video_root``, mirroring the tree."""
    jobs = []
    for video in sorted(p for p in video_root.rglob("*") if p.suffix.lower() in exts and p.is_file()):
        out = frame_root / video.relative_to(video_root).with_suffix("")
        if skip_done and out.is_dir() and any(out.iterdir()):
            continue
        jobs.append((video, out))
    return jobs


def partial_path(final: Path, is_dir: bool) -> Path:
    """Where a job writes before it is complete: folder ``x`` -> ``x.partial``, file ``x.mp4`` -> ``x.partial.mp4``."""
    name = f"{final.name}.partial" if is_dir else f"{final.stem}.partial{final.suffix}"
    return final.with_name(name)


def _run_one(job: list[str] | Callable[[], object]) -> str:
    """Run a command line or a Python callable; returns '' on success, else the error text."""
    if callable(job):
        try:
            job()
            return ""
        except Exception as e:
            return f"{type(e).__name__}: {e}"
    proc = subprocess.run(job, capture_output=True, text=True)
    return "" if proc.returncode == 0 else (proc.stderr.strip()[-500:] or f"exit {proc.returncode}")


def run_jobs(jobs: Sequence[tuple[list[str] | Callable[[], object], Path]], workers: int = 4,
             is_dir: bool = False) -> list[tuple[Path, str]]:
    """Run ``(command or callable, final path)`` jobs in a thread pool; returns ``(final path, error)`` for
    each failure.

    Each job must write to ``partial_path(final, is_dir)`` (created first when it is a folder). On success
    it is renamed to ``final``, on failure removed, so an interrupted run never leaves a truncated result
    under the final name, and re-running redoes only what is missing.
    """
    def one(job: tuple[list[str] | Callable[[], object], Path]) -> Optional[tuple[Path, str]]:
        cmd, final = job
        tmp = partial_path(final, is_dir)
        (tmp if is_dir else tmp.parent).mkdir(parents=True, exist_ok=True)
        error = _run_one(cmd)
        if not error and tmp.exists():
            if is_dir and final.is_dir():
                shutil.rmtree(final)  # an empty or stale folder from an earlier attempt
            os.replace(tmp, final)
            return None
        if is_dir:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        return final, (error or "no output written")

    with ThreadPoolExecutor(max(1, workers)) as pool:
        return [r for r in pool.map(one, list(jobs)) if r is not None]


def count_frames(decoder, record: VideoRecord) -> int:
    """Real frame count of a sample through its decoder (``frame_count``), lowered to a listed count."""
    n = decoder.frame_count(record)
    if n <= 0:
        raise ValueError(f"{record.path}: no frames")
    return n if record.num_frames <= 0 else min(n, record.num_frames)


def list_line(record: VideoRecord, num_frames: int) -> str:
    """``<path> <num_frames> <label>``; trimmed spans cannot be written in this format."""
    if record.start > 0 or (record.end is not None and record.end < num_frames):
        raise ValueError(f"{record.path}: a list file cannot hold the trimmed span [{record.start}, {record.end})")
    return f"{record.path} {num_frames} {record.label}"


def class_folder_lists(root: Path, val_fraction: float = 0.2,
                       exts: Sequence[str] = VIDEO_EXTS) -> tuple[list[str], list[str], list[str]]:
    """``(classes, train lines, val lines)`` for videos sorted into class folders: ``<root>/<class>/<clip>``,
    where a clip is a video file (by extension) or a frame folder. Classes are the folder names, sorted; lines
    are ``<class>/<clip> <label>``. Every ``k``-th clip of a class (k = round(1 / val_fraction)), in name
    order, goes to val; ``val_fraction`` 0 puts every clip in train. A path that ends in `` <number>`` is
    written as ``<path> 0 <label>`` (frame count unknown), so that it cannot be misread."""
    if not root.is_dir():
        raise FileNotFoundError(f"video folder not found: {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise ValueError(f"{root} holds no class folders: expected <root>/<class name>/<clip>")
    step = round(1 / val_fraction) if val_fraction > 0 else 0
    train, val = [], []
    for label, name in enumerate(classes):
        clips = sorted(p for p in (root / name).iterdir() if not p.name.startswith(".")
                       and (p.is_dir() or p.suffix.lower() in exts))
        if not clips:
            raise ValueError(f"{root / name} holds no video files ({', '.join(exts)}) or frame folders")
        for i, clip in enumerate(clips):
            path = f"{name}/{clip.name}"
            # a path ending in " <number>" would read as `<path> <num_frames>`: write 0 (count when decoded)
            line = f"{path} 0 {label}" if re.search(r"\s-?[0-9]+$", path) else f"{path} {label}"
            (val if step and i % step == step - 1 else train).append(line)
    return classes, train, val


# ---------------------------------------------------------------------------------------------- FineGym
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
