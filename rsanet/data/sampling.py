"""Which frames of a video form a clip: TSN segment sampling and a dense sampler.

Segment sampling (TSN) splits the ``n`` available frames into ``T`` equal segments, segment ``i`` being the
half-open range ``[i * n / T, (i + 1) * n / T)``, and takes one frame from each:

* train: a uniformly random frame of each segment (``floor(i n / T) + randint(len_i)``);
* test: the frame at fraction ``f_c`` of each segment, ``floor((i + f_c) * n / T)``, where clip ``c`` of
  ``K`` uses ``f_c = (0.5 + c / K) mod 1``. One clip takes the segment centres; the second of two clips is
  shifted by half a segment (the segment starts), and K clips are spread evenly within the segment.

Videos with fewer frames than segments repeat frames evenly (``n=3, T=8`` gives ``0 0 0 1 1 2 2 2`` at test
and ``0 0 0 1 1 1 2 2`` in training); indices never decrease and never leave ``[0, n)``.

Dense sampling takes ``T`` frames ``stride`` apart from one start (random in training, evenly spread over
the video for the ``K`` test clips); frames past the end loop back to the start of the span.

:class:`ClipSampler` applies either rule to a :class:`~rsanet.data.records.VideoRecord`: it samples within
the trimmed span ``[start, end)`` and returns indices into the whole file, clamped to the frames that exist.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np
import torch

from rsanet.data.records import VideoRecord

__all__ = ["segment_indices", "dense_indices", "ClipSampler"]


def _check(num_frames: int, num_segments: int, num_clips: int, clip: int) -> None:
    if num_frames <= 0:
        raise ValueError(f"cannot sample from a video with {num_frames} frames")
    if num_segments <= 0 or num_clips <= 0:
        raise ValueError(f"num_segments and num_clips must be positive, got {num_segments}, {num_clips}")
    if not 0 <= clip < num_clips:
        raise ValueError(f"clip {clip} is outside 0..{num_clips - 1}")


def segment_indices(num_frames: int, num_segments: int, train: bool, clip: int = 0, num_clips: int = 1,
                    generator: Optional[torch.Generator] = None) -> np.ndarray:
    """TSN segment sampling of ``num_segments`` frame offsets in ``[0, num_frames)`` (see the module doc)."""
    _check(num_frames, num_segments, num_clips, clip)
    n, t = num_frames, num_segments
    seg = np.arange(t, dtype=np.int64)
    if train:
        start = seg * n // t  # floor(i n / T)
        length = np.maximum((seg + 1) * n // t - start, 1)  # empty segments (n < T) keep their start frame
        rand = torch.randint(0, 2**62, (t,), generator=generator).numpy()
        return start + rand % length
    # floor((i + f) n / T) in exact integer arithmetic: f = (0.5 + c / K) mod 1 = num / den with den = 2K.
    num, den = (num_clips + 2 * clip) % (2 * num_clips), 2 * num_clips
    return (seg * den + num) * n // (den * t)


def dense_indices(num_frames: int, num_segments: int, stride: int, train: bool, clip: int = 0,
                  num_clips: int = 1, generator: Optional[torch.Generator] = None) -> np.ndarray:
    """``num_segments`` offsets ``stride`` apart from one start; offsets past the end loop (see the module doc)."""
    _check(num_frames, num_segments, num_clips, clip)
    if stride <= 0:
        raise ValueError(f"dense stride must be positive, got {stride}")
    span = (num_segments - 1) * stride + 1
    room = max(num_frames - span, 0)  # last possible start
    if train:
        start = int(torch.randint(0, room + 1, (1,), generator=generator))
    elif num_clips == 1:
        start = room // 2
    else:
        start = clip * room // (num_clips - 1)
    return (start + np.arange(num_segments, dtype=np.int64) * stride) % num_frames


@dataclass
class ClipSampler:
    """Frame indices of one clip of a record: ``kind`` segment or dense, train (random) or test mode.

    ``num_clips`` is the number of test clips per video (ignored in training). Call it with a record whose
    ``num_frames`` is the real frame count of the file (the decoders fill it in).
    """

    num_segments: int
    train: bool
    num_clips: int = 1
    kind: Literal["segment", "dense"] = "segment"
    dense_stride: int = 2

    def __call__(self, record: VideoRecord, clip: int = 0,
                 generator: Optional[torch.Generator] = None) -> np.ndarray:
        total = record.num_frames
        if total <= 0:
            raise ValueError(f"{record.path}: no frames to sample from (num_frames={total})")
        if record.start >= total:
            raise ValueError(f"{record.path}: the annotated span starts at frame {record.start}, but the file "
                             f"has only {total} frames")
        n = record.clip_frames
        if n <= 0:
            raise ValueError(f"{record.path}: empty annotated span [{record.start}, {record.end})")
        if self.kind == "segment":
            offsets = segment_indices(n, self.num_segments, self.train, clip, self.num_clips, generator)
        else:
            offsets = dense_indices(n, self.num_segments, self.dense_stride, self.train, clip, self.num_clips,
                                    generator)
        return np.clip(record.start + offsets, 0, total - 1)
