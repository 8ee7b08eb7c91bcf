"""Typed, strict experiment configuration.

One schema of defaults (the dataclasses below, with a comment on every key) holds the paper's
SS-V1 8-frame RSANet-R50 recipe (the authors' code where the paper is silent; docs/fidelity.md). A YAML
file sets only what differs from it, and ``--opts`` overrides (``train.lr=0.01
model.transform.rsa.kernel_size=[3,3,3]``) are applied on top. A file may start from other files: ``_base_:
ssv1_rsa_8f.yaml`` (a path relative to the file, or a list of them, applied in order) takes everything they
set, and the file's own keys win, section by section (a deep merge; lists and values are replaced whole).
Values are parsed with PyYAML's safe loader only (plus YAML 1.2 numbers such as ``1e-3``; a repeated key is
warned about). Unknown keys name the closest valid key, wrong types name the expected type (and the closest
allowed value), and one validation pass (:func:`validate`) fills in what the dataset decides and checks
cross-field rules.

The config holds what a user chooses, nothing derived from the job: the world size, the total batch and the
scaled learning rate are computed once per run (``rsanet.engine.run_state``). Keys of older configs and
checkpoints are read as their new names (:data:`RENAMED`), and derived ones dropped (:data:`DERIVED`).

Typical use::

    cfg = load_config("configs/ssv1_rsa_8f.yaml", ["train.lr=0.01"])
    dump_config(cfg, "work_dirs/run/config.yaml")
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import logging
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

from rsanet.backbones import BACKBONES
from rsanet.data.sets import DATASETS
from rsanet.data.sets.synthetic import SyntheticConfig
from rsanet.ops import TRANSFORMS, replaces

__all__ = [
    "Config", "ModelConfig", "TransformConfig", "transform_config", "DataConfig", "SyntheticConfig", "TrainConfig",
    "TestConfig",
    "RuntimeConfig", "ConfigError", "load_config", "dump_config", "config_to_dict", "config_from_dict",
    "parse_overrides", "validate", "read_yaml", "config_chain", "upgrade_config_dict", "RENAMED", "DERIVED",
]

# Keys of older configs and checkpoints, and what they are now. Read as the new key (with a note when a user's
# file or --opts writes them), so that old checkpoints, their stored configs and old config.yaml files load. A key
# that several transforms now own goes to the section of the transform in effect (model.transform.kernel_size was
# read by whichever transform `type` chose), or to the first section listed when that transform does not read it.
_T = "model.transform."
RENAMED: dict[str, tuple[str, ...]] = {
    "data.train_size": ("data.synthetic.train_size",), "data.val_size": ("data.synthetic.val_size",),
    "data.synthetic_frames": ("data.synthetic.frames",), "data.synthetic_resolution": ("data.synthetic.resolution",),
    "data.synthetic_classes": ("data.synthetic.classes",), "data.synthetic_seed": ("data.synthetic.seed",),
    _T + "kernel_size": tuple(f"{_T}{t}.kernel_size" for t in ("rsa", "self_attention", "conv3d", "conv2plus1d")),
    _T + "queries": (_T + "rsa.queries", _T + "self_attention.queries"),
    **{_T + k: (f"{_T}rsa.{k}",) for k in ("latent_dim", "groups", "kernel", "context", "norm", "l2_eps", "memory",
                                            "window_conv")},
    _T + "rsa_init": (_T + "rsa.init",),
    _T + "attention": (_T + "self_attention.attention",), _T + "softmax": (_T + "self_attention.softmax",),
}
# Keys that older configs held but that depend on the job, not on the experiment: they are dropped when read
# (the values of a run are in its run_state.json and in its checkpoints' `run_state`).
DERIVED = ("runtime.world_size", "train.total_batch", "train.scaled_lr")


class ConfigError(ValueError):
    """A config file or override that cannot be used; the message says where and what to write instead."""


# --------------------------------------------------------------------------------------------------
# YAML: safe_load, plus numbers such as 1e-3 (YAML 1.2 floats) and a warning on duplicate keys.
# --------------------------------------------------------------------------------------------------
# PyYAML follows YAML 1.1, where a float needs a dot: `1e-3` and `5e-4` would be strings. This adds the
# YAML 1.2 forms (an exponent without a dot); integers and the 1.1 float forms resolve as before.
_EXPONENT_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-3`` as a float and records duplicate mapping keys."""

    def __init__(self, stream):
        super().__init__(stream)
        self.duplicates: list[tuple[int, str]] = []  # (1-based line, key) of every repeated key

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    self.duplicates.append((key_node.start_mark.line + 1, key_node.value))
                seen.add(key_node.value)
        return super().construct_mapping(node, deep)


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _EXPONENT_FLOAT, list("-+0123456789."))


def read_yaml(text: str, source: str) -> Any:
    """Parse YAML ``text`` safely (no Python objects); warn once per key that a mapping repeats (PyYAML keeps
    the last value silently). ``source`` names the text in the warning (a file name or ``--opts``)."""
    loader = _Loader(text)
    try:
        data = loader.get_single_data()
    finally:
        loader.dispose()
    for line, key in loader.duplicates:
        logging.getLogger("rsanet").warning(f"{source}:{line}: key `{key}` is given twice in the same mapping; "
                                            "the later value is used")
    return data


# --------------------------------------------------------------------------------------------------
# Schema. Every key carries a one-line comment. Defaults are the paper's SS-V1 8-frame recipe, with the
# authors' code where the paper is silent (each item and its source: docs/fidelity.md).
# --------------------------------------------------------------------------------------------------
@dataclass
class TransformConfig:
    """``model.transform``: which transform replaces which convs of the backbone. Every transform of
    :data:`rsanet.ops.TRANSFORMS` adds a section of its own options (``model.transform.rsa``,
    ``model.transform.self_attention``, ...; :func:`transform_config`)."""

    # a name of rsanet.ops.TRANSFORMS: rsa, conv2d (TSN: nothing replaced), conv3d, conv2plus1d, self_attention
    type: str = "rsa"
    # shorthand: block ids per stage, from 0, whose 3x3 conv is replaced (RSANet-R50's 7)
    positions: list[list[int]] = field(default_factory=lambda: [[2], [1, 3], [1, 3, 5], [1]])
    # module names of the convs to replace, e.g. [layer1.2.conv2]; when not empty, used instead of positions (ours)
    replace: list[str] = field(default_factory=list)


@functools.lru_cache(maxsize=None)
def _transform_schema(entries: tuple) -> type:
    """The ``model.transform`` dataclass of a transform table: the placement keys plus one section per entry."""
    clash = [name for name, _ in entries if name in {f.name for f in dataclasses.fields(TransformConfig)}]
    if clash:
        raise ValueError(f"rsanet.ops.TRANSFORMS: a transform cannot be called {clash[0]!r} (a key of model.transform)")
    sections = [(name, options, field(default_factory=options)) for name, options in entries]
    cls = dataclasses.make_dataclass("TransformConfig", sections, bases=(TransformConfig,))
    cls.__module__, cls.__doc__ = __name__, TransformConfig.__doc__
    return cls


def transform_config(**values) -> TransformConfig:
    """A ``model.transform`` with a section for every transform in :data:`rsanet.ops.TRANSFORMS` now, defaults
    updated by ``values`` (nested dicts for the sections: ``transform_config(type="rsa", rsa={"queries": 4})``)."""
    cls = _transform_schema(tuple((name, entry.Options) for name, entry in TRANSFORMS.items()))
    obj = cls()
    _merge(obj, values, "transform_config", "model.transform.")
    return obj


@dataclass
class ModelConfig:
    """A 2D backbone of rsanet.backbones.BACKBONES, spatio-temporal transforms in it, and the TSN head."""

    # a name of rsanet.backbones.BACKBONES: resnet18/34/50/101/152, resnext50_32x4d, resnext101_32x8d,
    # wide_resnet50_2, wide_resnet101_2
    arch: str = "resnet50"
    num_classes: int = 0  # classifier outputs; 0 = the dataset's class count (label file, official count); ours
    num_segments: int = 8  # frames per clip seen by the model (T)
    width: int = 64  # channels of the stem; 64 is the standard ResNet, smaller values make tiny models
    dropout: float = 0.3  # dropout before the classifier
    stochastic_depth: float = 0.2  # final drop rate of the residual branch, linear over blocks
    # ImageNet init: torchvision (the backbone's IMAGENET1K_V1, torch hub cache) or a .pth path
    pretrained: Optional[str] = None
    # fine-tune from a video checkpoint (ours or the authors' .pth.tar); fresh optimizer/schedule (our choice)
    init_from: Optional[str] = None
    # other layers of a block holding a transform: msra (paper) or copied from `pretrained`
    transform_block_init: Literal["msra", "pretrained"] = "msra"
    # classifier_init: "xavier_uniform" with bias 0 = the authors' code (ops/models.py, and main.py re-inits the
    # new fc with xavier_uniform_); "normal" = N(0, 0.001) with bias 0, TSN's choice (our earlier default)
    classifier_init: Literal["xavier_uniform", "normal"] = "xavier_uniform"  # init of the fc (authors' code)
    # activation checkpointing of the transforms (only the transform runs twice; BatchNorms never do): RSANet-R50
    # keeps 1.00x TSN's activations
    checkpoint_rsa: bool = False
    transform: TransformConfig = field(default_factory=transform_config)  # the spatio-temporal transform


@dataclass
class DataConfig:
    """Dataset, sampling, decoding and augmentation."""

    dataset: str = "ssv1"  # a name of rsanet.data.sets.DATASETS: ssv1, ssv2, diving48, gym99, gym288, list, synthetic
    root: Optional[str] = None  # folder of frame folders or video files
    train_annotations: Optional[str] = None  # official train annotation file (csv/json/txt, or a list file)
    val_annotations: Optional[str] = None  # official validation annotation file
    test_annotations: Optional[str] = None  # official test annotation file (often without labels)
    label_file: Optional[str] = None  # official labels / vocab / categories file
    backend: Literal["auto", "frames", "video"] = "auto"  # JPEG frame folders or video files; auto: from the data; ours
    frame_template: str = "{:05d}.jpg"  # file name of frame i (1-based) inside a frame folder
    frame_start: int = 1  # index of the first frame file on disk (SS-V1 starts at 00001.jpg)
    video_ext: str = ""  # video file extension, '' means the dataset's default (its module's VIDEO_EXT)
    sampler: Literal["segment", "dense"] = "segment"  # TSN segment sampling, or dense sampling
    # segment_rule (rsanet/data/sampling.py): tsm = the authors' code (ops/dataset.py, the TSN/TSM rule: train
    # i*(n//T) + randint(n//T), test int(tick/2 + tick*i); frame 0 only when n < T in training, n <= T at test);
    # uniform = our choice, segments spread over all n frames
    segment_rule: Literal["tsm", "uniform"] = "tsm"  # where the segments lie: tsm (authors' code) or uniform (ours)
    dense_stride: int = 2  # frame step of the dense sampler
    resize: list[int] = field(default_factory=lambda: [240, 320])  # frames are resized to H x W first
    crop_size: int = 224  # side of the square crop fed to the model
    scales: list[float] = field(default_factory=lambda: [1.0, 0.875, 0.75, 0.66])  # TSN multi-scale crop scales
    flip: Literal["none", "all", "skip_left_right", "swap_left_right"] = "skip_left_right"  # horizontal flip policy
    mean: list[float] = field(default_factory=lambda: [0.485, 0.456, 0.406])  # normalization mean (ImageNet)
    std: list[float] = field(default_factory=lambda: [0.229, 0.224, 0.225])  # normalization std (ImageNet)
    num_workers: int = 8  # DataLoader worker processes per process
    pin_memory: bool = True  # pin host memory for faster host-to-GPU copies
    max_bad_fraction: float = 0.01  # abort when more than this fraction of samples in an epoch is unreadable
    decode_timeout: float = 60.0  # seconds one sample may take to decode before it counts as unreadable
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)  # options of data.dataset: synthetic


@dataclass
class TrainConfig:
    """Optimization recipe (Appendix A). Learning rate is given per 64 clips and scaled to the real total batch
    of the run (batch_size x processes x accumulate; rsanet.engine.run_state)."""

    epochs: int = 50  # training epochs
    warmup_epochs: float = 5.0  # epochs of linear warm-up (paper, authors' code)
    lr: float = 0.02  # learning rate for a total batch of `lr_reference_batch` clips
    lr_reference_batch: int = 64  # the batch size at which `lr` applies
    # lr_schedule (rsanet/engine/optim.py): "epoch" = the authors' code (ops/CosineAnnealingLR.py stepped once per
    # epoch before it; reproduces the LR column of their logs); "step" = ours, warm-up and cosine per optimizer step
    lr_schedule: Literal["epoch", "step"] = "epoch"  # how often the LR changes: per epoch (authors' code) or per step
    min_lr_ratio: float = 1e-3  # final LR of the cosine as a fraction of the scaled LR (authors' code: min_ratio=1e-3)
    min_lr: float = 0.0  # absolute final LR of the cosine; when > 0 it replaces min_lr_ratio (our option)
    momentum: float = 0.9  # SGD momentum
    nesterov: bool = True  # Nesterov momentum
    weight_decay: float = 5e-4  # weight decay (not applied to BN parameters and biases)
    batch_size: int = 8  # clips per process per step
    accumulate: int = 1  # gradient accumulation steps per optimizer step
    label_smoothing: float = 0.1  # label smoothing of the cross-entropy
    clip_grad_norm: float = 100.0  # max gradient norm; 0 disables clipping
    amp: Literal["none", "bf16", "fp16"] = "none"  # automatic mixed precision
    tf32: bool = False  # TF32 convs/matmuls on Ampere+ GPUs (faster); false = plain fp32, as the authors' V100 runs
    channels_last: bool = False  # channels-last memory format for the 2D layers
    compile: bool = False  # torch.compile the model (refused together with sync_bn: a graph break at every SyncBN)
    sync_bn: bool = False  # convert BatchNorm to SyncBatchNorm in distributed runs
    eval_every: int = 1  # validate every N epochs (and after the last)
    split: Literal["train"] = "train"  # split used for training
    val_split: Literal["val", "test"] = "val"  # split used for validation during training


@dataclass
class TestConfig:
    """Multi-view evaluation (tools/test.py)."""

    split: Literal["val", "test"] = "val"  # split to evaluate
    clips: int = 1  # temporal clips per video (segment offsets shifted evenly within a segment)
    crops: Literal[1, 3] = 1  # spatial crops per clip: 1 = centre, 3 = three along the long side
    resize: list[int] = field(default_factory=list)  # test resize H x W; empty means data.resize
    crop_size: int = 0  # test crop side; 0 means data.crop_size
    batch_size: int = 8  # clips per process per step
    save_scores: bool = True  # write per-video score files to the work dir


@dataclass
class RuntimeConfig:
    """Where and how the job runs."""

    work_dir: str = ""  # output folder; '' means work_dirs/<config file name>
    device: str = "auto"  # 'auto' (cuda when present), 'cpu' or 'cuda'
    seed: int = 0  # global random seed (offset by rank)
    deterministic: bool = False  # deterministic algorithms (bit-exact resume on CPU; slower)
    log_interval: int = 20  # iterations between log lines
    tensorboard: bool = True  # write TensorBoard scalars
    progress: bool = True  # show tqdm progress bars on rank 0
    dist_backend: Literal["auto", "nccl", "gloo"] = "auto"  # process group backend; auto = nccl on GPU, gloo on CPU
    dist_timeout_minutes: int = 30  # collective timeout, so that no rank waits forever for a failed one
    checkpoint_interval: int = 500  # also write last.pth every N optimizer steps inside an epoch (0: epoch ends only)
    keep_epoch_checkpoints: int = 2  # epoch_NNN.pth files kept besides last.pth and best.pth (fallbacks for resume)


@dataclass
class Config:
    """The whole experiment."""

    model: ModelConfig = field(default_factory=ModelConfig)  # the network
    data: DataConfig = field(default_factory=DataConfig)  # the input pipeline
    train: TrainConfig = field(default_factory=TrainConfig)  # the optimization recipe
    test: TestConfig = field(default_factory=TestConfig)  # the evaluation protocol
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)  # devices, logging, output


# --------------------------------------------------------------------------------------------------
# Strict merge with type checking.
# --------------------------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner = " | ".join(_type_name(a) for a in args)
        return f"{inner} or null" if len(args) < len(typing.get_args(tp)) else inner
    if origin is list:
        (arg,) = typing.get_args(tp)
        return f"list of {_type_name(arg)}"
    return getattr(tp, "__name__", str(tp))


class _TypeMismatch(Exception):
    pass


def _coerce(value: Any, tp: Any) -> Any:
    """Return ``value`` as type ``tp`` or raise _TypeMismatch. Only lossless conversions are made."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value in allowed and type(value) in {type(a) for a in allowed}:
            return value
        raise _TypeMismatch
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg)
            except _TypeMismatch:
                pass
        raise _TypeMismatch
    if origin is list:
        (arg,) = typing.get_args(tp)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise _TypeMismatch
        return [_coerce(v, arg) for v in value]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _TypeMismatch
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _TypeMismatch
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise _TypeMismatch
    if tp is str:
        if isinstance(value, str):
            return value
        raise _TypeMismatch
    raise TypeError(f"unsupported schema type {tp!r}")


def _all_keys(obj: Any, prefix: str = "") -> list[str]:
    """Every dotted key of a config instance (the sections of ``model.transform`` are those of the table now)."""
    keys = []
    for f in dataclasses.fields(obj):
        name = f"{prefix}{f.name}"
        keys.append(name)
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            keys.extend(_all_keys(value, name + "."))
    return keys


def _suggest(bad_key: str, valid: list[str]) -> str:
    """Closest valid dotted key; compares whole dotted paths and the last component."""
    match = difflib.get_close_matches(bad_key, valid, n=1, cutoff=0.5)
    if not match:
        leaf = bad_key.rsplit(".", 1)[-1]
        by_leaf = {k.rsplit(".", 1)[-1]: k for k in valid}
        leaf_match = difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.6)
        match = [by_leaf[leaf_match[0]]] if leaf_match else []
    return f"; did you mean `{match[0]}`?" if match else ""


def _suggest_value(value: Any, tp: Any) -> str:
    """``; did you mean 'x'?`` for a string close to one of the allowed values of a Literal type."""
    allowed = [a for a in typing.get_args(tp) if isinstance(a, str)] if typing.get_origin(tp) is Literal else []
    match = difflib.get_close_matches(value, allowed, n=1, cutoff=0.6) if isinstance(value, str) else []
    return f"; did you mean {match[0]!r}?" if match else ""


def _merge(obj: Any, updates: dict, source: str, prefix: str = "") -> None:
    """Apply a nested dict of ``updates`` onto dataclass ``obj`` in place, strictly."""
    if not isinstance(updates, dict):
        where = prefix.rstrip(".") or "the top level"
        raise ConfigError(f"{source}: `{where}` must be a mapping, got {type(updates).__name__}")
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in updates.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            valid = _all_keys(Config())
            raise ConfigError(f"{source}: unknown key `{dotted}`{_suggest(dotted, valid)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            if value is None:
                continue
            _merge(getattr(obj, key), value, source, dotted + ".")
            continue
        try:
            setattr(obj, key, _coerce(value, tp))
        except _TypeMismatch:
            raise ConfigError(f"{source}: `{dotted}` expects {_type_name(tp)}, got {value!r} "
                              f"({type(value).__name__}){_suggest_value(value, tp)}") from None


def parse_overrides(overrides: list[str] | None) -> dict:
    """Turn ``["train.lr=0.01", "model.transform.rsa.kernel_size=[3,3,3]"]`` into a nested dict.

    Values are parsed as YAML (never ``eval``), so ``[3,3,3]``, ``null``, ``true`` and ``1e-3`` work.
    """
    nested: dict = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--opts: `{item}` is not of the form key=value (for example train.lr=0.01)")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = read_yaml(raw, f"--opts {key}") if raw.strip() else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"--opts: cannot parse the value of `{key}`: {raw!r} ({e})") from None
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--opts: `{key}` conflicts with another override")
        node[parts[-1]] = value
    return nested


# --------------------------------------------------------------------------------------------------
# Keys of older configs: renamed ones are moved, derived ones dropped.
# --------------------------------------------------------------------------------------------------
def _pop_dotted(data: dict, dotted: str) -> tuple[bool, Any]:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict) and leaf in node:
        return True, node.pop(leaf)
    return False, None


def upgrade_config_dict(data: Any, source: str = "config", note=None, transform_type: str = "rsa") -> Any:
    """A copy of a nested config dict with the keys of older versions updated: :data:`RENAMED` keys moved to
    their new place, :data:`DERIVED` keys dropped. A key that several transforms own goes to the section of
    ``data``'s own ``model.transform.type``, else of ``transform_type`` (the type in effect), else to the first
    section listed. ``note(message)`` (e.g. a warning) is told about each one; a key given under both its old and
    its new name with different values is a :class:`ConfigError`."""
    if not isinstance(data, dict):
        return data
    data = copy.deepcopy(data)
    section = f"{_T}{_transform_dict(data).get('type') or transform_type}."
    for old, targets in RENAMED.items():
        found, value = _pop_dotted(data, old)
        if not found:
            continue
        new = next((t for t in targets if t.startswith(section)), targets[0])
        _put_dotted(data, new, value, old, source)
        if note is not None:
            note(f"{source}: `{old}` is now `{new}`; read as `{new}: {value!r}`")
    for key in DERIVED:
        found, value = _pop_dotted(data, key)
        if found and note is not None:
            note(f"{source}: `{key}` ({value!r}) is no longer a config key and is ignored: it is derived for each "
                 "run (work_dir/run_state.json)")
    return data


def _put_dotted(data: dict, new: str, value: Any, old: str, source: str) -> None:
    """Set ``new`` (dotted) to the value of the old key ``old``, refusing a different value already there."""
    *parents, leaf = new.split(".")
    node = data
    for part in parents:
        if node.get(part) is None:
            node[part] = {}
        if not isinstance(node[part], dict):
            raise ConfigError(f"{source}: `{old}` is now `{new}`, but `{part}` is not a mapping")
        node = node[part]
    if leaf in node and node[leaf] != value:
        raise ConfigError(f"{source}: `{old}` (the old name of `{new}`) and `{new}` are both given, with "
                          f"different values ({value!r}, {node[leaf]!r}): keep `{new}` only")
    node[leaf] = value


def _warn(message: str) -> None:
    logging.getLogger("rsanet").warning(message)


# --------------------------------------------------------------------------------------------------
# Validation: what the dataset decides, and cross-field rules.
# --------------------------------------------------------------------------------------------------
def _resolve_dataset_defaults(cfg: Config) -> None:
    """``model.num_classes: 0`` and ``data.backend: auto`` where the dataset's module decides them when the
    config is loaded (no file is read here); what it leaves open, its files decide later
    (``rsanet.data.check.resolve_from_files``)."""
    d, m = cfg.data, cfg.model
    num_classes, backend = DATASETS[d.dataset].defaults(d)
    if m.num_classes == 0:
        m.num_classes = num_classes
    if d.backend == "auto":
        d.backend = backend


def validate(cfg: Config, source: str = "config") -> Config:
    """Fill in what the dataset decides and check rules that involve several keys. Returns ``cfg``."""
    m, d, tr, te = cfg.model, cfg.data, cfg.train, cfg.test

    def fail(msg: str) -> None:
        raise ConfigError(f"{source}: {msg}")

    _one_of(d.dataset, DATASETS, "data.dataset", fail)
    problem = DATASETS[d.dataset].check(d)
    if problem:
        fail(problem)
    _resolve_dataset_defaults(cfg)
    if m.num_classes < 0:
        fail(f"`model.num_classes` must be positive (or 0: the dataset's class count), got {m.num_classes}")
    positive = {
        "model.num_segments": m.num_segments, "model.width": m.width,
        "train.batch_size": tr.batch_size, "train.accumulate": tr.accumulate,
        "train.lr_reference_batch": tr.lr_reference_batch, "test.batch_size": te.batch_size,
        "test.clips": te.clips, "data.crop_size": d.crop_size, "data.dense_stride": d.dense_stride,
        "runtime.log_interval": cfg.runtime.log_interval, "train.eval_every": tr.eval_every,
    }
    for key, value in positive.items():
        if value <= 0:
            fail(f"`{key}` must be positive, got {value}")
    if not 0.0 <= m.dropout < 1.0:
        fail(f"`model.dropout` must be in [0, 1), got {m.dropout}")
    if not 0.0 <= m.stochastic_depth < 1.0:
        fail(f"`model.stochastic_depth` must be in [0, 1), got {m.stochastic_depth}")
    if not 0.0 <= tr.label_smoothing < 1.0:
        fail(f"`train.label_smoothing` must be in [0, 1), got {tr.label_smoothing}")
    if tr.compile and tr.sync_bn:
        fail("`train.compile` with `train.sync_bn` is refused: torch.compile cannot trace SyncBatchNorm's "
             "cross-process statistics and breaks the graph at every one (about 60 pieces for a ResNet-50), "
             "which costs the speed compile is meant to bring; set one of them to false")
    if not 0.0 <= d.max_bad_fraction <= 1.0:
        fail(f"`data.max_bad_fraction` must be in [0, 1], got {d.max_bad_fraction}")
    if not 0.0 <= tr.min_lr_ratio < 1.0 or tr.min_lr < 0:
        fail(f"`train.min_lr_ratio` must be in [0, 1) and `train.min_lr` >= 0, got {tr.min_lr_ratio}, {tr.min_lr}")
    if tr.epochs < 0 or tr.warmup_epochs < 0 or tr.warmup_epochs > max(tr.epochs, 0):
        fail(f"`train.warmup_epochs` ({tr.warmup_epochs}) must be within [0, train.epochs={tr.epochs}]")
    _check_backbone(cfg, fail)
    _check_transform(cfg, fail)
    if len(d.resize) != 2 or len(d.mean) != 3 or len(d.std) != 3:
        fail("`data.resize` needs [H, W] and `data.mean`/`data.std` three values each")
    if te.resize and len(te.resize) != 2:
        fail(f"`test.resize` needs [H, W] or [], got {te.resize}")
    if not d.scales or any(not 0 < s <= 1 for s in d.scales):
        fail(f"`data.scales` must be in (0, 1], got {d.scales}")
    try:
        d.frame_template.format(1)
    except (IndexError, KeyError, ValueError) as e:
        fail(f"`data.frame_template` {d.frame_template!r} cannot format a frame index: {e}")
    return cfg


def _one_of(value: str, table: dict, key: str, fail) -> None:
    """``value`` must name an entry of ``table`` (a did-you-mean for a typo)."""
    if value not in table:
        close = difflib.get_close_matches(value, list(table), n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        fail(f"`{key}` is {value!r}, expected one of {', '.join(table)}{hint}")


def _check_backbone(cfg: Config, fail) -> None:
    """``model.arch`` names a backbone of the table, which can honour the ``model`` keys."""
    m = cfg.model
    _one_of(m.arch, BACKBONES, "model.arch", fail)
    check = getattr(BACKBONES[m.arch], "check", None)
    problem = check(m) if check is not None else None
    if problem:
        fail(problem)


def _check_transform(cfg: Config, fail) -> None:
    """Rules of ``model.transform``: a transform of the table, its own options (its module's ``check``), and
    where it goes (``positions`` inside the backbone's stages, or ``replace`` names)."""
    m, t = cfg.model, cfg.model.transform
    _one_of(t.type, TRANSFORMS, "model.transform.type", fail)
    check = getattr(TRANSFORMS[t.type], "check", None)
    problem = check(getattr(t, t.type), f"model.transform.{t.type}") if check is not None else None
    if problem:
        fail(problem)
    unread = _inactive_setting(t)
    if unread:
        fail(f"`model.transform.{unread}` is set, but `model.transform.type` is {t.type}, which does not read it: "
             f"remove it, or set `model.transform.type: {unread.split('.')[0]}`")
    if not replaces(t.type):
        if t.replace:
            fail(f"`model.transform.replace` names convs, but {t.type} replaces none (the backbone keeps its own "
                 "convs): remove it, or choose a transform")
        return  # conv2d: the backbone keeps its own convs; positions are not read
    if t.replace:
        if not all(re.fullmatch(r"[A-Za-z_][\w]*(\.[\w]+)*", name) for name in t.replace) \
                or len(set(t.replace)) != len(t.replace):
            fail(f"`model.transform.replace` must list distinct module names such as layer1.2.conv2, got {t.replace}")
        return  # whether they are convs of the backbone is checked when it is built
    depths = BACKBONES[m.arch].DEPTHS
    if len(t.positions) != len(depths):
        fail(f"`model.transform.positions` needs one list per stage ({len(depths)}), got {t.positions}"
             + ("" if depths else f"; {m.arch} has no stages to count: name the convs in `model.transform.replace`"))
    for stage, (blocks, depth) in enumerate(zip(t.positions, depths)):
        for b in blocks:
            if not 0 <= b < depth:
                fail(f"`model.transform.positions` stage {stage} has block {b}, but {m.arch} has "
                     f"{depth} blocks there (0..{depth - 1})")


def _inactive_setting(t) -> str | None:
    """The first key (``section.key``) of another transform's section that differs from its default: a setting
    the model would ignore."""
    for name, entry in TRANSFORMS.items():
        if name == t.type:
            continue
        options, default = getattr(t, name), entry.Options()
        for f in dataclasses.fields(options):
            if getattr(options, f.name) != getattr(default, f.name):
                return f"{name}.{f.name}"
    return None


def _transform_dict(data: Any) -> dict:
    """The ``model.transform`` mapping of a raw config dict ({} when it has none)."""
    model = data.get("model") if isinstance(data, dict) else None
    transform = model.get("transform") if isinstance(model, dict) else None
    return transform if isinstance(transform, dict) else {}


def _transform_sections(data: dict) -> dict:
    """The transform option sections that a raw config dict sets: ``{name: {key: value}}``."""
    return {name: value for name, value in _transform_dict(data).items()
            if name in TRANSFORMS and isinstance(value, dict)}


def _settle_transform_sections(cfg: Config, layers: list[tuple[str, dict]]) -> None:
    """Refuse an option of another transform's section set (to another value than its default) by a layer (a
    file of the chain, or --opts) that also chose, or comes after the one that chose, ``model.transform.type``:
    the model would not read it.
    Options inherited from before the type was chosen (an RSA config run with ``--opts
    model.transform.type=conv3d``) are no one's mistake. Then every other section goes back to its defaults,
    so that the resolved config holds only what the model reads."""
    t = cfg.model.transform
    chose = max((i for i, (_, data) in enumerate(layers) if "type" in _transform_dict(data)), default=0)
    for source, data in layers[chose:]:
        for name, options in _transform_sections(data).items():
            default = config_to_dict(TRANSFORMS[name].Options())
            changed = [k for k, v in options.items() if name != t.type and default.get(k, v) != v]
            if changed:  # (a section equal to the defaults, as a dumped config writes it, sets nothing)
                key = f"model.transform.{name}.{changed[0]}"
                raise ConfigError(f"{source}: `{key}` is set, but `model.transform.type` is {t.type}, which does not "
                                  f"read it: remove it, or set `model.transform.type: {name}`")
    for name, entry in TRANSFORMS.items():
        if name != t.type:
            setattr(t, name, entry.Options())


# --------------------------------------------------------------------------------------------------
# Public loading / dumping.
# --------------------------------------------------------------------------------------------------
def config_to_dict(cfg: Any) -> dict:
    """Plain nested dict of a config (or of one section)."""
    return dataclasses.asdict(cfg)


def config_from_dict(data: dict, source: str = "dict") -> Config:
    """Build and validate a Config from a nested dict (e.g. the one stored in a checkpoint). Keys of older
    versions are read silently as their new names, derived ones dropped (:func:`upgrade_config_dict`), and the
    option sections of transforms other than the stored type are left at their defaults (no run read them)."""
    cfg = Config()
    _merge(cfg, upgrade_config_dict(data or {}, source), source)
    _settle_transform_sections(cfg, [])
    return validate(cfg, source=source)


def default_work_dir(config_path: str | os.PathLike) -> str:
    """``work_dirs/<name>`` for ``<name>.yaml``; a config inside a ``configs`` folder keeps its sub-folders
    (``configs/synthetic/rsa.yaml`` -> ``work_dirs/synthetic/rsa``)."""
    path = Path(config_path)
    parts = path.with_suffix("").parts
    if "configs" in parts[:-1]:
        below = parts[len(parts) - 1 - parts[::-1].index("configs") + 1:]
        return str(Path("work_dirs", *below))
    return str(Path("work_dirs") / path.stem)


def _read_file(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = read_yaml(path.read_text(), str(path))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    return data or {}


def config_chain(path: str | os.PathLike, _seen: tuple[Path, ...] = ()) -> list[tuple[Path, dict]]:
    """``[(file, its own keys), ...]`` of a config and the files it starts from (``_base_``), the first base
    first and ``path`` last: applying them in this order gives the config. ``_base_`` is a path relative to
    the file, or a list of them (applied in order). A file that reaches itself again is refused, naming the
    chain (``a.yaml -> b.yaml -> a.yaml``)."""
    path = Path(path)
    here = path.resolve()
    if here in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, here))
        raise ConfigError(f"{path}: `_base_` files form a cycle: {chain}")
    data = _read_file(path)
    bases = data.pop("_base_", None)
    if bases is None:
        bases = []
    elif isinstance(bases, str):
        bases = [bases]
    elif not (isinstance(bases, list) and all(isinstance(b, str) for b in bases)):
        raise ConfigError(f"{path}: `_base_` must be a file name or a list of file names, got {bases!r}")
    chain: list[tuple[Path, dict]] = []
    for base in bases:
        chain += config_chain(path.parent / base, (*_seen, here))
    return chain + [(path, data)]


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file at ``path`` (if any; after the files of its ``_base_`` chain), then
    ``overrides``; then :func:`validate`.

    Raises :class:`ConfigError` naming the file (or ``--opts``), the key and the closest valid key.
    """
    cfg = Config()
    source = "defaults"
    layers: list[tuple[str, dict]] = []  # (source, keys it sets), in the order applied
    if path is not None:
        path = Path(path)
        source = str(path)
        for file, data in config_chain(path):
            layers.append((str(file), upgrade_config_dict(data, str(file), note=_warn,
                                                          transform_type=cfg.model.transform.type)))
            _merge(cfg, layers[-1][1], str(file))
        if not cfg.runtime.work_dir:
            cfg.runtime.work_dir = default_work_dir(path)
    if overrides:
        layers.append(("--opts", upgrade_config_dict(parse_overrides(overrides), "--opts", note=_warn,
                                                     transform_type=cfg.model.transform.type)))
        _merge(cfg, layers[-1][1], "--opts")
        source = f"{source} + --opts"
    _settle_transform_sections(cfg, layers)
    if not cfg.runtime.work_dir:
        cfg.runtime.work_dir = str(Path("work_dirs") / "default")
    return validate(cfg, source=source)


def dump_config(cfg: Config, path: str | os.PathLike | None = None) -> str:
    """The resolved config as YAML text (loadable by :func:`load_config`); written to ``path`` if given."""
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return text
