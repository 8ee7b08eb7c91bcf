"""The generic video dataset and ``build_dataset(cfg, split)``.

:class:`VideoDataset` combines records, a decoder, a :class:`~rsanet.data.sampling.ClipSampler` and a clip
transform. Training items are one random clip per video. Val/test items are views, clip-major:
``index = video * num_views + view`` with ``view = clip * crops + crop`` and ``num_views = clips * crops``.

Items hold uint8 clips (C, T, H, W); the engine normalizes them on the device (``normalize_clip``).

Bad samples. Decoding runs under a guard of ``data.decode_timeout`` seconds (in a helper thread; a decoder
stuck past it is abandoned and the sample counts as unreadable). Decoders that declare ``can_hang = False``
(local JPEG frame folders, the synthetic renderer) run without it: the thread would cost about a
millisecond per sample and protect against nothing. An unreadable sample is logged with its path and:

* train: replaced by the next video (then the one after, up to ``max_attempts``); the item's ``replaced``
  says how many were skipped. When all ``max_attempts`` are unreadable, the item is an all-zero clip with
  label -1 and ``replaced = max_attempts``: the engine leaves it out of the loss and counts it, and the
  budget check (summed over all ranks) stops every rank together instead of one rank alone;
* val/test: kept in place, so that video and view identity never change: the item is an all-zero clip
  with the video's label and ``replaced = 1``. Its scores still count for that video (a wrong or lucky
  guess), and the engine counts it among the unreadable samples.

The engine sums ``replaced`` over an epoch and calls :func:`check_bad_fraction`.
"""
from __future__ import annotations

import copy
import logging
import threading
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from torch.utils.data import Dataset

from rsanet.data.decoders import Decoded, decode_clip
from rsanet.data.labels import left_right_pairs
from rsanet.data.records import Decoder, VideoRecord
from rsanet.data.sampling import ClipSampler
from rsanet.data.sets import dataset_module
from rsanet.data.transforms import FlipPolicy, TestTransform, TrainTransform

__all__ = ["VideoDataset", "build_dataset", "build_records", "check_bad_fraction", "BadDataError",
           "DecodeTimeout", "call_with_timeout", "SPLITS"]

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class BadDataError(RuntimeError):
    """Too many unreadable samples (more than ``data.max_bad_fraction``)."""


class DecodeTimeout(TimeoutError):
    """A sample took longer than ``data.decode_timeout`` to decode."""


def check_bad_fraction(replaced: int, seen: int, max_fraction: float, split: str = "train") -> None:
    """Raise :class:`BadDataError` when ``replaced / seen`` exceeds ``max_fraction`` (``data.max_bad_fraction``)."""
    if seen > 0 and replaced / seen > max_fraction:
        raise BadDataError(
            f"{replaced} of {seen} {split} samples ({100.0 * replaced / seen:.2f}%) were unreadable, more than "
            f"data.max_bad_fraction={max_fraction}. The warnings above name the files; "
            f"`python tools/check_dataset.py --config <cfg> --split {split}` lists them all.")


def call_with_timeout(fn: Callable[[], Any], timeout: float, what: str) -> Any:
    """``fn()``, or :class:`DecodeTimeout` naming ``what`` if it runs longer than ``timeout`` s (<= 0: no guard)."""
    if timeout <= 0:
        return fn()
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:  # re-raised in the caller's thread
            box["error"] = e

    worker = threading.Thread(target=run, daemon=True, name="rsanet-decode")
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise DecodeTimeout(f"decoding {what} took longer than data.decode_timeout={timeout}s")
    if "error" in box:
        raise box["error"]
    return box["value"]


class VideoDataset(Dataset):
    """Records -> sampler -> decoder -> transform; items are dicts (see DESIGN.md, "Samples")."""

    def __init__(self, records: Sequence[VideoRecord], decoder: Decoder, sampler: ClipSampler, transform: Callable,
                 classes: Sequence[str], train: bool, crops: int = 1, decode_timeout: float = 60.0,
                 max_attempts: int = 10, dropped: Sequence[VideoRecord] = ()):
        if not records:
            raise ValueError("the dataset has no videos")
        self.records, self.decoder, self.sampler, self.transform = list(records), decoder, sampler, transform
        self.classes, self.train = list(classes), train
        self.crops = 1 if train else crops
        self.num_clips = 1 if train else sampler.num_clips
        # no watchdog thread for a decoder that cannot hang (it would cost ~1 ms per sample for nothing)
        self.decode_timeout = decode_timeout if getattr(decoder, "can_hang", True) else 0.0
        self.max_attempts = max_attempts
        self.dropped = list(dropped)  # records dropped at start-up because their file is missing

    @property
    def num_videos(self) -> int:
        return len(self.records)

    @property
    def num_views(self) -> int:
        return self.num_clips * self.crops

    def __len__(self) -> int:
        return self.num_videos * self.num_views

    def location(self, video: int | VideoRecord) -> str:
        """Where the sample of ``video`` (an index or a record) lives on disk (for messages)."""
        record = video if isinstance(video, VideoRecord) else self.records[int(video)]
        root = getattr(self.decoder, "root", None)
        return str(Path(root) / record.path) if root is not None else record.path

    def load(self, video: int, clip: int = 0, crop: int = 0) -> tuple[torch.Tensor, int, Decoded]:
        """Decode and transform one view of ``video``; raises on an unreadable sample."""
        record = self.records[video]

        def work() -> Decoded:
            return decode_clip(self.decoder, record, lambda r: self.sampler(r, clip))

        decoded = call_with_timeout(work, self.decode_timeout, self.location(video))
        tensor, label = self.transform(decoded.frames, record.label, crop=crop)
        return tensor, label, decoded

    def _try_load(self, video: int, clip: int, crop: int) -> Optional[tuple[torch.Tensor, int]]:
        try:
            tensor, label, _ = self.load(video, clip, crop)
            return tensor, label
        except Exception as e:
            logger.warning("unreadable sample %s: %s", self.location(video), e)
            return None

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"sample index {index} is outside 0..{len(self) - 1}")
        video, view = divmod(index, self.num_views)
        clip, crop = divmod(view, self.crops)
        if not self.train:
            out, replaced = self._try_load(video, clip, crop), 0
            if out is None:  # keep video/view identity: a zero clip with the video's label
                out, replaced = (self._zero_clip(), self.records[video].label), 1
            return {"clip": out[0], "label": out[1], "index": index, "video": video, "view": view,
                    "replaced": replaced}
        for attempt in range(self.max_attempts):
            candidate = (video + attempt) % self.num_videos
            out = self._try_load(candidate, 0, 0)
            if out is not None:
                return {"clip": out[0], "label": out[1], "index": index, "video": candidate, "view": 0,
                        "replaced": attempt}
        # No raise here: that would stop this rank alone and leave the others waiting in a collective.
        failed = [self.location((video + a) % self.num_videos) for a in range(self.max_attempts)]
        logger.error("%d consecutive samples are unreadable (item left out of the loss): %s", self.max_attempts,
                     failed)
        return {"clip": self._zero_clip(), "label": -1, "index": index, "video": video, "view": 0,
                "replaced": self.max_attempts}

    def _zero_clip(self) -> torch.Tensor:
        """The all-zero uint8 clip (C, T, S, S) that stands in for an unreadable sample."""
        size = self.transform.crop_size
        return torch.zeros(3, self.sampler.num_segments, size, size, dtype=torch.uint8)

    def inspect(self, video: int) -> tuple[Optional[int], Optional[str]]:
        """(frame count, None) if the first view of ``video`` decodes and transforms, else (None, error)."""
        try:
            _, _, decoded = self.load(video, 0, 0)
            return decoded.num_frames, None
        except Exception as e:
            return None, f"{type(e).__name__}: {e}"


# ------------------------------------------------------------------------------------------ builders
def drop_missing(records: Sequence[VideoRecord], root: Path,
                 source: str) -> tuple[list[VideoRecord], list[VideoRecord]]:
    """Split records into (present, missing) by one directory listing per folder; warn about the missing."""
    listings: dict[Path, set[str]] = {}
    kept, missing = [], []
    for r in records:
        full = root / r.path
        if full.parent not in listings:
            listings[full.parent] = set(p.name for p in full.parent.iterdir()) if full.parent.is_dir() else set()
        (kept if full.name in listings[full.parent] else missing).append(r)
    if missing:
        first = ", ".join(r.path for r in missing[:5])
        logger.warning("%d of %d clips listed in %s are missing under %s and were dropped (first: %s)",
                       len(missing), len(records), source, root, first)
    return kept, missing


def build_records(cfg, split: str) -> tuple[list[VideoRecord], Decoder, list[str], list[VideoRecord]]:
    """(records, decoder, classes, dropped) of a split of ``cfg.data.dataset``, through its module in
    :data:`rsanet.data.sets.DATASETS`; files are checked here, at start-up. ``dropped`` holds the listed clips
    whose file is missing, for a dataset that drops them (``DROP_MISSING``)."""
    kind = dataset_module(cfg.data.dataset)
    decoder = kind.decoder(cfg)
    classes = kind.class_names(cfg)
    records = kind.records(cfg, split, classes)
    source = getattr(cfg.data, f"{split}_annotations", None) or f"the {split} split"
    dropped: list[VideoRecord] = []
    if kind.DROP_MISSING:
        records, dropped = drop_missing(records, Path(cfg.data.root).expanduser(), str(source))
    if not records:
        raise ValueError(f"{source}: no usable videos" + (f" under {cfg.data.root}" if cfg.data.root else ""))
    return records, decoder, classes, dropped


def build_transform(cfg, classes: Sequence[str], train: bool) -> Callable:
    """Train or test clip transform of the config (test uses the ``test.*`` sizes and crops)."""
    d = cfg.data
    if train:
        flip = FlipPolicy(d.flip, left_right_pairs(classes))
        return TrainTransform(d.resize, d.crop_size, d.scales, flip)
    t = cfg.test
    return TestTransform(t.resize or d.resize, t.crop_size or d.crop_size, t.crops)


def build_dataset(cfg, split: str) -> VideoDataset:
    """The dataset of ``split`` ("train" | "val" | "test") for ``cfg.data.dataset``.

    Train uses random segment offsets and the train augmentation; val and test use the test protocol
    (``test.clips`` x ``test.crops`` views per video, ``test.resize`` and ``test.crop_size``).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    train = split == "train"
    if cfg.model.num_classes == 0 or cfg.data.backend == "auto":  # left to the files (the engine resolves first)
        cfg = copy.deepcopy(cfg)
        dataset_module(cfg.data.dataset).resolve(cfg, [split])
    records, decoder, classes, dropped = build_records(cfg, split)
    if len(classes) != cfg.model.num_classes:
        raise ValueError(f"model.num_classes={cfg.model.num_classes}, but data.label_file "
                         f"({cfg.data.label_file or 'the dataset classes'}) defines {len(classes)} classes: "
                         f"set model.num_classes={len(classes)} (or 0 to follow the data)")
    sampler = ClipSampler(cfg.model.num_segments, train, 1 if train else cfg.test.clips, cfg.data.sampler,
                          cfg.data.dense_stride, cfg.data.segment_rule)
    return VideoDataset(records, decoder, sampler, build_transform(cfg, classes, train), classes, train,
                        crops=cfg.test.crops, decode_timeout=cfg.data.decode_timeout, dropped=dropped)
