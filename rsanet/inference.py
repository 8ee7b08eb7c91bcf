"""Trained models on single videos: the shared ground of the research tools (predict, visualize, export).

* :func:`resolve_config` takes the experiment YAML, or, without one, the config stored in the checkpoint.
* :func:`load_model` builds ``build_model(cfg)``, loads the checkpoint's weights and returns it in eval mode.
* :func:`class_names` reads the dataset's label map without needing its annotation files.
* :func:`single_video_dataset` (with :func:`video_views` and :func:`load_clip` on top) wraps one video file
  or frame folder in the dataset machinery of :mod:`rsanet.data` with the test-time sampler and transform,
  so a tool sees exactly the clips that ``tools/test.py`` would see for that video (``test.clips`` x
  ``test.crops`` views). A dataset may name its own videos outside the file system (its module's
  ``open_video``): with a synthetic config, ``synthetic://<split>/<index>`` is a generated video.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from rsanet.config import Config, ConfigError, config_from_dict, load_config, parse_overrides
from rsanet.data import ClipSampler, VideoDataset, VideoRecord, build_decoder, build_transform, normalize_clip
from rsanet.data.sets import dataset_module
from rsanet.dist import resolve_device
from rsanet.engine.weights import load_model_weights, read_model_weights

__all__ = ["resolve_config", "load_model", "class_names", "single_video_dataset", "video_views", "load_clip",
           "clip_to_frames"]


def _deep_update(base: dict, updates: dict) -> dict:
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value
    return base


def resolve_config(config: Optional[str | os.PathLike], checkpoint: str | os.PathLike,
                   overrides: Sequence[str] = ()) -> Config:
    """The config of a trained model: the YAML file ``config`` (plus ``overrides``), or, when ``config`` is
    None, the resolved config stored in ``checkpoint`` (plus ``overrides``)."""
    if config is not None:
        cfg = load_config(config, list(overrides))
        from rsanet.data.check import resolve_from_files
        resolve_from_files(cfg, ["train", "val", "test"])  # e.g. a list dataset's num_classes 0 / backend auto
        return cfg
    weights = read_model_weights(checkpoint)
    stored = weights.config
    if weights.kind == "authors":
        raise ConfigError(f"{checkpoint} is an authors' checkpoint, which stores no config (nor the number of "
                          "frames T): pass --config, e.g. configs/ssv2_rsa_16f.yaml for their SS-V2 16-frame model")
    if stored is None:
        raise ConfigError(f"{checkpoint} is a bare state dict without a stored config; pass --config")
    data = _deep_update(copy.deepcopy(stored), parse_overrides(list(overrides)))
    return config_from_dict(data, source=f"config stored in {checkpoint}")


def load_model(cfg: Config, checkpoint: str | os.PathLike, device: str | torch.device = "cpu",
               announce: Optional[Callable[[str], None]] = None) -> nn.Module:
    """``build_model(cfg)`` with the weights of ``checkpoint`` (ours, a bare state dict, or the authors'
    ``.pth.tar``, converted), in eval mode.

    ``model.pretrained`` and ``model.init_from`` are ignored: every weight comes from the checkpoint. Raises
    :class:`~rsanet.engine.checkpoint.CheckpointError` naming the file when the weights do not fit the config.
    ``announce`` (e.g. a print to stderr) is told when the file was converted from the authors' format.
    """
    from rsanet.models import build_model

    weights = read_model_weights(checkpoint)
    if weights.kind == "authors" and announce is not None:
        announce(weights.describe())
    cfg = copy.deepcopy(cfg)
    cfg.model.pretrained = cfg.model.init_from = None
    model = build_model(cfg)
    load_model_weights(model, weights, cfg.model)
    device = resolve_device(device) if isinstance(device, str) else device
    return model.to(device).eval()


def class_names(cfg: Config) -> list[str]:
    """Class names in label order from the dataset's label map (``data.label_file``; the synthetic benchmark
    names its own classes). Only the label file is read, never the annotation files."""
    names = dataset_module(cfg.data.dataset).class_names(cfg)
    if len(names) != cfg.model.num_classes:
        raise ConfigError(f"the label map of {cfg.data.dataset!r} ({cfg.data.label_file or 'its own classes'}) has "
                          f"{len(names)} classes but model.num_classes={cfg.model.num_classes}")
    return list(names)


def single_video_dataset(cfg: Config, path: str | os.PathLike, classes: Sequence[str]) -> VideoDataset:
    """A one-video test dataset over ``path``: a video file (decord), a frame folder (``data.frame_template``
    from ``data.frame_start``) or a video the config's dataset names itself (``synthetic://<split>/<index>`` of
    a synthetic config). Views follow ``test.clips`` x ``test.crops``; nothing is decoded yet."""
    d = cfg.data
    own = dataset_module(d.dataset).open_video(cfg, str(path))
    if own is not None:
        decoder, record = own
    elif "://" in str(path):
        raise ValueError(f"{path}: not a video of data.dataset={d.dataset!r} (e.g. synthetic://test/3 needs a "
                         "synthetic config), nor a file or folder")
    else:
        path = Path(path).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"video not found: {path}")
        backend = "frames" if path.is_dir() else "video"
        decoder = build_decoder(backend, path.parent, d.frame_template, d.frame_start)
        record = VideoRecord(path=path.name, num_frames=0, video_id=str(path))
    sampler = ClipSampler(cfg.model.num_segments, train=False, num_clips=cfg.test.clips, kind=d.sampler,
                          dense_stride=d.dense_stride, segment_rule=d.segment_rule)
    return VideoDataset([record], decoder, sampler, build_transform(cfg, classes, train=False), classes,
                        train=False, crops=cfg.test.crops, decode_timeout=d.decode_timeout)


def video_views(cfg: Config, path: str | os.PathLike, classes: Sequence[str]) -> torch.Tensor:
    """Every test-time view of one video, clip-major: (V, C, T, S, S) float32 with V = test.clips * test.crops,
    normalized by :func:`~rsanet.data.normalize_clip` exactly as the engine normalizes a batch.

    Raises an exception naming the file when it cannot be read (missing, not a video, no frames...).
    """
    ds = single_video_dataset(cfg, path, classes)
    views = [ds.load(0, clip, crop)[0] for clip in range(ds.num_clips) for crop in range(ds.crops)]
    return normalize_clip(torch.stack(views), cfg.data.mean, cfg.data.std)  # uint8 (V, C, T, S, S) -> float


def load_clip(cfg: Config, video: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """The first test clip, centre crop, of ``video``: normalized (C, T, S, S) float32 (the model's input, as
    in :func:`video_views`) and the uint8 frames (T, S, S, 3) it was made from."""
    cfg = copy.deepcopy(cfg)
    cfg.test.clips, cfg.test.crops = 1, 1
    pixels = single_video_dataset(cfg, video, classes=[]).load(0)[0]  # uint8 (C, T, S, S)
    frames = pixels.permute(1, 2, 3, 0).contiguous()  # (C, T, S, S) -> (T, S, S, C)
    return normalize_clip(pixels, cfg.data.mean, cfg.data.std), frames


def clip_to_frames(clip: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Undo the normalization of a float (C, T, H, W) clip: uint8 frames (T, H, W, C) as the model saw them
    (exact for clips made by :func:`~rsanet.data.normalize_clip`)."""
    m = torch.tensor(mean, dtype=clip.dtype).view(-1, 1, 1, 1)  # (C,) -> (C, 1, 1, 1)
    s = torch.tensor(std, dtype=clip.dtype).view(-1, 1, 1, 1)  # (C,) -> (C, 1, 1, 1)
    pixels = (clip * s + m).mul(255.0).round().clamp(0, 255).to(torch.uint8)
    return pixels.permute(1, 2, 3, 0).contiguous()  # (C, T, H, W) -> (T, H, W, C)
