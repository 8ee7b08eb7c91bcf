"""Decoding backends: JPEG frame folders and video files (decord), behind one small interface.

Every backend implements the :class:`~rsanet.data.records.Decoder` protocol (``decode(record, indices)``)
and, for sampling against the real frame count, ``decode_clip(record, choose) -> Decoded``: it finds out how
many frames the sample really has, lets ``choose`` (the sampler) pick indices for that count, and decodes
them. :func:`decode_clip` calls it, or falls back to ``decode`` for backends that know their frame count up
front (the synthetic generator). Frames come back as uint8 RGB arrays of shape (T, H, W, 3).

* Frame folders: ``<root>/<record.path>/<frame_template.format(frame_start + i)>``. The frame count is the
  run of consecutive files from the first one (listed lazily, once per sample: no start-up scan); a gap
  in the run makes the sample unreadable.
* Videos: ``decord.VideoReader(path, num_threads=1, ctx=cpu(0))`` opened per sample and dropped after use.
  Files whose extension is in ``sequential_exts`` (WebM by default, whose VP8/VP9 seeking can return wrong
  frames) are read sequentially from the first frame, without any seek; others use decord's accurate
  ``get_batch``, falling back to a sequential read if that fails. Either way indices past the frames that
  really decode (an over-reported count) are clamped to the last decoded frame.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from rsanet.data.records import Decoder, VideoRecord

__all__ = ["Decoded", "FrameFolderDecoder", "VideoFileDecoder", "decode_clip", "build_decoder"]

Chooser = Callable[[VideoRecord], np.ndarray]  # record with the real num_frames -> frame indices


@dataclass
class Decoded:
    """Decoded frames (T, H, W, 3) uint8, the file frame indices they show, and the file's frame count
    (when a video ended before its reported length: the frames known to decode, a lower bound)."""

    frames: np.ndarray
    indices: np.ndarray
    num_frames: int


def decode_clip(decoder: Decoder, record: VideoRecord, choose: Chooser) -> Decoded:
    """Sample and decode one clip with any backend (see the module doc)."""
    native = getattr(decoder, "decode_clip", None)
    if native is not None:
        return native(record, choose)
    indices = np.asarray(choose(record), dtype=np.int64)
    return Decoded(np.asarray(decoder.decode(record, indices.tolist())), indices, record.num_frames)


_STDERR_LOCK = threading.Lock()


@contextlib.contextmanager
def _captured_stderr():
    """Redirect file descriptor 2 (where FFmpeg and decord's C++ code print) into a temporary file for the
    duration of the block; yields a function returning the captured lines. One capture at a time."""
    lines: list[str] = []
    with _STDERR_LOCK, tempfile.TemporaryFile(mode="w+b") as sink:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield lambda: lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode("utf-8", "replace").splitlines())


def _with_count(record: VideoRecord, counted: int) -> VideoRecord:
    """The record with its real frame count (a listed count larger than the real one is lowered)."""
    n = counted if record.num_frames <= 0 else min(record.num_frames, counted)
    return dataclasses.replace(record, num_frames=n)


def _stack(frames: list[np.ndarray], where: str) -> np.ndarray:
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise ValueError(f"{where}: frames of different sizes {sorted(shapes)}")
    return np.stack(frames)


class FrameFolderDecoder:
    """JPEG (or PNG...) frame folders read with PIL into RGB uint8."""

    # No decode watchdog thread: a local JPEG read ends (a damaged file raises in PIL), unlike a video
    # demuxer that can spin on a broken stream. A read stuck in the kernel (a dead network mount) cannot be
    # interrupted by the thread either; it would only be abandoned, still holding its frames. Saved per
    # sample: one thread start and join (about 0.1 ms; within the noise of a 5-25 ms frame-folder sample).
    can_hang = False

    def __init__(self, root: str | Path, template: str = "{:05d}.jpg", frame_start: int = 1):
        self.root = Path(root)
        self.template = template
        self.frame_start = frame_start

    def folder(self, record: VideoRecord) -> Path:
        return self.root / record.path

    def count_frames(self, folder: Path) -> int:
        """Number of consecutive frame files from the first one (0 if the first is absent).

        A gap (a missing frame file followed by more frame files) raises, naming the missing file, so that
        a damaged folder is reported instead of being silently cut short.
        """
        try:
            names = set(os.listdir(folder))
        except FileNotFoundError:
            raise FileNotFoundError(f"frame folder not found: {folder}") from None
        except NotADirectoryError:
            raise NotADirectoryError(f"not a frame folder: {folder}") from None
        n = 0
        while self.template.format(self.frame_start + n) in names:
            n += 1
        suffix = self.template.rsplit("}", 1)[-1]
        later = sum(1 for name in names if name.endswith(suffix)) - n
        if n > 0 and later > 0:
            raise FileNotFoundError(f"{folder}: frame file {self.template.format(self.frame_start + n)} is missing "
                                    f"but {later} later frame files exist")
        return n

    def frame_count(self, record: VideoRecord) -> int:
        """Frames of the record's folder (see :meth:`count_frames`)."""
        return self.count_frames(self.folder(record))

    def _read(self, folder: Path, indices: Sequence[int]) -> np.ndarray:
        from PIL import Image

        cache: dict[int, np.ndarray] = {}
        for i in indices:
            if i not in cache:
                path = folder / self.template.format(self.frame_start + int(i))
                with Image.open(path) as im:
                    cache[i] = np.asarray(im.convert("RGB"))
        return _stack([cache[i] for i in indices], str(folder))

    def decode(self, record: VideoRecord, indices: Sequence[int]) -> np.ndarray:
        return self._read(self.folder(record), [int(i) for i in indices])

    def decode_clip(self, record: VideoRecord, choose: Chooser) -> Decoded:
        folder = self.folder(record)
        n = self.count_frames(folder)
        if n == 0:
            raise FileNotFoundError(f"no frames in {folder} (expected {self.template.format(self.frame_start)})")
        record = _with_count(record, n)
        indices = np.asarray(choose(record), dtype=np.int64)
        return Decoded(self._read(folder, indices.tolist()), indices, record.num_frames)


class VideoFileDecoder:
    """Video files decoded with decord, one single-threaded reader per sample."""

    can_hang = True  # a broken or truncated stream can keep the demuxer busy: decode under data.decode_timeout

    def __init__(self, root: str | Path, sequential_exts: Sequence[str] = (".webm",)):
        self.root = Path(root)
        self.sequential_exts = tuple(e.lower() for e in sequential_exts)

    def file(self, record: VideoRecord) -> Path:
        return self.root / record.path

    def _open(self, path: Path):
        from decord import VideoReader, cpu

        if not path.is_file():
            raise FileNotFoundError(f"video file not found: {path}")
        with _captured_stderr() as said:
            try:
                return VideoReader(str(path), num_threads=1, ctx=cpu(0))
            except Exception as e:  # decord raises RuntimeError/DECORDError with its own text
                error = e
        # FFmpeg and decord print the reason to stderr ("... ERROR opening: <file>, Invalid data found ..."):
        # it was captured, and goes into the message instead.
        reason = [line.rsplit(", ", 1)[-1] for line in said() if "ERROR opening" in line]
        raise RuntimeError(f"cannot open video {path}: {(reason or str(error).splitlines() or ['?'])[0]}") from None

    def frame_count(self, record: VideoRecord) -> int:
        """Frame count the container reports (may be over-reported for some WebM files)."""
        reader = self._open(self.file(record))
        try:
            return len(reader)
        finally:
            del reader

    @staticmethod
    def _read_sequential(reader, indices: np.ndarray, path: Path) -> tuple[np.ndarray, Optional[int]]:
        """Frames at ``indices`` read forward from frame 0, and the real frame count if the stream ended
        before the largest index (those indices then take the last decoded frame), else None."""
        got: dict[int, np.ndarray] = {}
        pos, ended = 0, False
        for i in np.unique(indices).tolist():
            try:
                if i > pos:
                    reader.skip_frames(i - pos)
                got[i] = reader.next().asnumpy()
            except StopIteration:
                ended = True
                break
            pos = i + 1
        if not got:
            raise RuntimeError(f"no frame of {path} decodes")
        last = max(got)
        frames = _stack([got[min(int(i), last)] for i in indices], str(path))
        return frames, (last + 1 if ended else None)

    def _read(self, path: Path, indices: np.ndarray, reader) -> tuple[np.ndarray, Optional[int]]:
        if path.suffix.lower() in self.sequential_exts:
            return self._read_sequential(reader, indices, path)
        try:
            return reader.get_batch(indices.tolist()).asnumpy(), None
        except Exception:  # over-reported length or a broken seek: read forward instead
            fresh = self._open(path)
            try:
                return self._read_sequential(fresh, indices, path)
            finally:
                del fresh

    def decode(self, record: VideoRecord, indices: Sequence[int]) -> np.ndarray:
        path = self.file(record)
        reader = self._open(path)
        try:
            idx = np.clip(np.asarray(indices, dtype=np.int64), 0, max(len(reader) - 1, 0))
            return self._read(path, idx, reader)[0]
        finally:
            del reader

    def decode_clip(self, record: VideoRecord, choose: Chooser) -> Decoded:
        path = self.file(record)
        reader = self._open(path)
        try:
            n = len(reader)
            if n <= 0:
                raise RuntimeError(f"{path} reports no frames")
            record = _with_count(record, n)
            indices = np.asarray(choose(record), dtype=np.int64)
            frames, real_count = self._read(path, indices, reader)
            if real_count is None:
                return Decoded(frames, indices, record.num_frames)
            return Decoded(frames, np.minimum(indices, real_count - 1), real_count)
        finally:
            del reader


def build_decoder(backend: str, root: str | Path, frame_template: str = "{:05d}.jpg",
                  frame_start: int = 1) -> Decoder:
    """The decoder for ``data.backend`` (``frames`` or ``video``)."""
    if backend == "frames":
        return FrameFolderDecoder(root, frame_template, frame_start)
    if backend == "video":
        return VideoFileDecoder(root)
    raise ValueError(f"unknown data.backend {backend!r}; expected 'frames' or 'video'")
