"""Which frames of a video form a clip: TSN segment sampling and a dense sampler.

Segment sampling (TSN) takes one frame from each of ``T`` segments of the ``n`` available frames. Two rules
decide where the segments lie (``data.segment_rule``):

``tsm`` (the default; the rule of the authors' code, ``ops/dataset.py`` of KimManjin/RSA, which is the
TSN/TSM one):

* train: ``avg = n // T`` frames per segment; segment ``i`` takes ``i * avg + randint(avg)``. The last
  ``n mod T`` frames are never used, and a video with fewer frames than segments gives all zeros (every time
  step shows the first frame). The random numbers are NumPy's legacy ``randint(avg, size=T)`` of a
  ``RandomState`` seeded with one draw from the torch generator, so that a seed gives exactly the indices
  of the authors' code after ``np.random.seed(seed)``. (Their code has a third branch, sorted random
  indices when ``avg == 0`` and ``n > T``; with one frame per segment it can never be taken.)
* test: ``tick = n / T`` and segment ``i`` takes ``int(tick * f + tick * i)`` in floating point, with
  ``f = 1/2`` for one clip (``int(tick / 2 + tick * i)``, the segment centres); videos with ``n <= T`` give
  all zeros. For ``K`` clips, clip ``c`` uses ``f_c = (1/2 + c / K) mod 1`` (our generalization: ``K = 2``
  gives the centres and then the segment starts ``int(tick * i)``, TSM's ``twice_sample``).

``uniform`` (ours, spreads the segments over all ``n`` frames): segment ``i`` is the half-open range
``[i * n / T, (i + 1) * n / T)``;

* train: a uniformly random frame of each segment (``floor(i n / T) + randint(len_i)``);
* test: the frame at fraction ``f_c`` of each segment, ``floor((i + f_c) * n / T)`` (``f_c`` as above).

  Videos with fewer frames than segments repeat frames evenly (``n=3, T=8`` gives ``0 0 0 1 1 2 2 2`` at
  test and ``0 0 0 1 1 1 2 2`` in training).

The two rules give the same test indices (one or two clips) whenever ``n > T`` and ``T`` is a power of two,
and the same training distribution (not the same random stream) whenever ``n`` is a multiple of ``T``.
Indices never decrease and never leave ``[0, n)``.

Dense sampling takes ``T`` frames ``stride`` apart from one start (random in training, evenly spread over
the video for the ``K`` test clips); frames past the end loop back to the start of the span.

:class:`ClipSampler` applies either sampler to a :class:`~rsanet.data.records.VideoRecord`: it samples within
the trimmed span ``[start, end)`` and returns indices into the whole file, clamped to the frames that exist.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np
import torch

from rsanet.data.records import VideoRecord

__all__ = ["segment_indices", "dense_indices", "ClipSampler", "SEGMENT_RULES"]

SEGMENT_RULES = ("tsm", "uniform")  # values of data.segment_rule (see the module doc)


def _check(num_frames: int, num_segments: int, num_clips: int, clip: int) -> None:
    if num_frames <= 0:
        raise ValueError(f"cannot sample from a video with {num_frames} frames")
    if num_segments <= 0 or num_clips <= 0:
        raise ValueError(f"num_segments and num_clips must be positive, got {num_segments}, {num_clips}")
    if not 0 <= clip < num_clips:
        raise ValueError(f"clip {clip} is outside 0..{num_clips - 1}")


def segment_indices(num_frames: int, num_segments: int, train: bool, clip: int = 0, num_clips: int = 1,
                    generator: Optional[torch.Generator] = None, rule: str = "tsm") -> np.ndarray:
    """TSN segment sampling of ``num_segments`` frame offsets in ``[0, num_frames)`` by ``rule`` (module doc)."""
    _check(num_frames, num_segments, num_clips, clip)
    if rule == "tsm":
        if train:
            return _tsm_train(num_frames, num_segments, generator)
        return _tsm_test(num_frames, num_segments, clip, num_clips)
    if rule == "uniform":
        return _uniform(num_frames, num_segments, train, clip, num_clips, generator)
    raise ValueError(f"unknown segment rule {rule!r}; choose from {list(SEGMENT_RULES)}")


def _tsm_train(n: int, t: int, generator: Optional[torch.Generator]) -> np.ndarray:
    avg = n // t  # frames per segment; the last n mod T frames are never used
    if avg == 0:  # fewer frames than segments: every time step shows frame 0
        return np.zeros(t, dtype=np.int64)
    seed = int(torch.randint(0, 2**32, (1,), generator=generator))
    rand = np.random.RandomState(seed).randint(avg, size=t)  # NumPy's legacy stream, as np.random.randint
    return np.arange(t, dtype=np.int64) * avg + rand


def _tsm_test(n: int, t: int, clip: int, num_clips: int) -> np.ndarray:
    if n <= t:  # the authors' validation rule: all zeros unless there are more frames than segments
        return np.zeros(t, dtype=np.int64)
    tick = n / t
    frac = ((num_clips + 2 * clip) % (2 * num_clips)) / (2 * num_clips)  # (1/2 + c/K) mod 1; exactly 0.5 for c=0
    offsets = (tick * frac + tick * np.arange(t, dtype=np.float64)).astype(np.int64)  # int() truncates, as theirs
    return np.minimum(offsets, n - 1)


def _uniform(n: int, t: int, train: bool, clip: int, num_clips: int,
             generator: Optional[torch.Generator]) -> np.ndarray:
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

    ``num_clips`` is the number of test clips per video (ignored in training); ``segment_rule`` is ``tsm`` or
    ``uniform`` (the module doc). Call it with a record whose ``num_frames`` is the real frame count of the
    file (the decoders fill it in).
    """

    num_segments: int
    train: bool
    num_clips: int = 1
    kind: Literal["segment", "dense"] = "segment"
    dense_stride: int = 2
    segment_rule: Literal["tsm", "uniform"] = "tsm"

    def __post_init__(self) -> None:
        if self.segment_rule not in SEGMENT_RULES:
            raise ValueError(f"unknown segment rule {self.segment_rule!r}; choose from {list(SEGMENT_RULES)}")

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
            offsets = segment_indices(n, self.num_segments, self.train, clip, self.num_clips, generator,
                                      self.segment_rule)
        else:
            offsets = dense_indices(n, self.num_segments, self.dense_stride, self.train, clip, self.num_clips,
                                    generator)
        return np.clip(record.start + offsets, 0, total - 1)
