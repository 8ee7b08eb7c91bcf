"""One small record type for every dataset, the decoder interface every backend implements, and the file
extensions that count as videos."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Protocol, Sequence

import numpy as np

# Extensions of video files (a path with another extension, or none, is a frame folder where it matters:
# a list dataset's backend, tools/make_list.py, frame extraction).
VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")


@dataclass(frozen=True)
class VideoRecord:
    """One video (or trimmed clip) of a dataset.

    ``path`` is a frame folder or a video file (absolute, or relative to ``data.root``). ``num_frames`` is the
    number of frames of the whole file as listed or probed (0 = unknown until decoded). ``start`` and ``end``
    delimit a trimmed clip inside it (frame indices counted from 0, ``end`` exclusive; ``end=None`` means up
    to the last frame). ``label`` is the class index, -1 where the split has no labels.
    """

    path: str
    num_frames: int
    label: int = -1
    start: int = 0
    end: Optional[int] = None
    video_id: str = ""

    @property
    def clip_frames(self) -> int:
        """Frames available to the sampler: the trimmed span, clamped to the frames that exist."""
        end = self.num_frames if self.end is None else min(self.end, self.num_frames or self.end)
        return max(end - self.start, 0)


class Decoder(Protocol):
    """A decoding backend (frame folders, decord videos, synthetic videos...).

    ``decode`` returns the requested frames, ``indices`` counted from 0 within the file (the sampler has
    already added ``record.start`` and clamped them), as a uint8 RGB array of shape (T, H, W, 3). It raises
    an exception that names the file when the sample cannot be read.

    A decoder may set ``can_hang = False`` (one whose reads always end: in-memory rendering, local JPEG
    frame folders); the dataset then runs it without the ``data.decode_timeout`` watchdog thread (one
    thread started and joined per sample).
    """

    def decode(self, record: VideoRecord, indices: Sequence[int]) -> np.ndarray: ...
