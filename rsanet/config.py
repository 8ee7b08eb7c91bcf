"""Typed, strict experiment configuration.

One schema of defaults (the dataclasses below, with a comment on every key) holds the paper's
SS-V1 8-frame RSANet-R50 recipe (the authors' code where the paper is silent; docs/fidelity.md). A YAML
file sets only what differs from it, and ``--opts`` overrides (``train.lr=0.01
model.transform.kernel_size=[3,3,3]``) are applied on top. Values are parsed with PyYAML's safe loader
only (plus YAML 1.2 numbers such as ``1e-3``; a repeated key is warned about). Unknown keys name the
closest valid key, wrong types name the expected type, and one validation pass (:func:`validate`)
fills in derived values and checks cross-field rules.

Typical use::

    cfg = load_config("configs/ssv1_rsa_8f.yaml", ["train.lr=0.01"])
    dump_config(cfg, "work_dirs/run/config.yaml")
"""
from __future__ import annotations

import dataclasses
import difflib
import logging
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml

__all__ = [
    "Config", "ModelConfig", "TransformConfig", "DataConfig", "TrainConfig", "TestConfig", "RuntimeConfig",
    "ConfigError", "load_config", "dump_config", "config_to_dict", "config_from_dict", "parse_overrides",
    "validate", "read_yaml", "OFFICIAL_CLASSES", "OFFICIAL_BACKEND",
]

# Class counts of the official datasets (what `model.num_classes: 0` becomes for them).
OFFICIAL_CLASSES = {"ssv1": 174, "ssv2": 174, "diving48": 48, "gym99": 99, "gym288": 288}
# The form each official dataset is released in (what `data.backend: auto` becomes for them).
OFFICIAL_BACKEND = {"ssv1": "frames", "ssv2": "video", "diving48": "video", "gym99": "video", "gym288": "video"}


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
    """What replaces the 3x3 spatial conv of the residual blocks listed in ``positions``."""

    type: Literal["rsa", "conv2d", "conv3d", "conv2plus1d", "self_attention"] = "rsa"  # transform kind (Table 2)
    positions: list[list[int]] = field(default_factory=lambda: [[2], [1, 3], [1, 3, 5], [1]])  # block ids per stage, from 0
    kernel_size: list[int] = field(default_factory=lambda: [5, 7, 7])  # M = t x h x w context of local transforms
    queries: int = 8  # L, number of queries (multi-query, Sec. 4.2); also the heads of self_attention
    latent_dim: int = 0  # D, latent dim of H = H1 H2^T; 0 means C_Q = C / L
    groups: int = 0  # G of the query-key correlation; 0 means C_Q (Hadamard product), 1 a dot product
    kernel: list[Literal["basic", "relational"]] = field(default_factory=lambda: ["basic", "relational"])  # RSA kernels
    context: list[Literal["basic", "relational"]] = field(default_factory=lambda: ["basic", "relational"])  # RSA contexts
    norm: Literal["l2", "none", "batchnorm"] = "l2"  # normalization of q, k and v (Table 6c)
    l2_eps: float = 0.0  # RSA L2 norm: 0 divides by max(|x|, 1e-12) (ours); > 0 by sqrt(|x|^2 + l2_eps) (the authors' code: 1e-6)
    memory: Literal["save", "recompute"] = "save"  # rsa, same numbers either way (our choice, README "Performance"): what backward keeps, save = q, k, v and the key window conv (RSANet-R50 1.11x TSN's activations), recompute = q, k, v only (1.04x, re-runs both window convs)
    window_conv: Literal["auto", "native", "channels_last", "batched"] = "auto"  # rsa, same numbers (our choice, rsanet/ops/channelwise_conv.py): window-conv kernels; auto = batched/channels_last (oneDNN) on CPU, channels_last (cuDNN) on CUDA, native for float64
    attention: list[Literal["content", "position"]] = field(default_factory=lambda: ["content", "position"])  # self_attention terms: qk^T and/or qP^T
    softmax: bool = True  # self_attention: apply the softmax over the window (False: plain qP^T kernel)
    # rsa_init: "authors" = the authors' code (ops/ResNet.py re-inits every Conv3d of the layer with kaiming
    # normal fan_out of their shapes; ops/rsa.py draws P1 = randn*sqrt(1/(M*D))); "variance_preserving" = ours
    # (rsanet/ops/rsa.py RSA.reset_parameters gives both)
    rsa_init: Literal["authors", "variance_preserving"] = "authors"  # init of the RSA factors (authors' code)


@dataclass
class ModelConfig:
    """TSN-ResNet backbone with spatio-temporal transforms."""

    arch: Literal["resnet18", "resnet34", "resnet50", "resnet101"] = "resnet50"  # backbone depth
    num_classes: int = 0  # classifier outputs; 0 = the dataset's class count (label file, official count); ours
    num_segments: int = 8  # frames per clip seen by the model (T)
    width: int = 64  # channels of the stem; 64 is the standard ResNet, smaller values make tiny models
    dropout: float = 0.3  # dropout before the classifier
    stochastic_depth: float = 0.2  # final drop rate of the residual branch, linear over blocks
    pretrained: Optional[str] = None  # ImageNet init: torchvision (IMAGENET1K_V1, torch hub cache) or a .pth path
    init_from: Optional[str] = None  # fine-tune from a video checkpoint (ours or the authors' .pth.tar); fresh optimizer/schedule (our choice)
    transform_block_init: Literal["msra", "pretrained"] = "msra"  # other layers of a block holding a transform: msra (paper) or copied from `pretrained`
    # classifier_init: "xavier_uniform" with bias 0 = the authors' code (ops/models.py, and main.py re-inits the
    # new fc with xavier_uniform_); "normal" = N(0, 0.001) with bias 0, TSN's choice (our earlier default)
    classifier_init: Literal["xavier_uniform", "normal"] = "xavier_uniform"  # init of the fc (authors' code)
    checkpoint_rsa: bool = False  # activation checkpointing of the transforms (conv2 of the blocks that hold one; BatchNorms never run twice): RSANet-R50 keeps 1.00x TSN's activations
    transform: TransformConfig = field(default_factory=TransformConfig)  # the spatio-temporal transform


@dataclass
class DataConfig:
    """Dataset, sampling, decoding and augmentation."""

    dataset: Literal["ssv1", "ssv2", "diving48", "gym99", "gym288", "list", "synthetic"] = "ssv1"  # dataset kind
    root: Optional[str] = None  # folder of frame folders or video files
    train_annotations: Optional[str] = None  # official train annotation file (csv/json/txt, or a list file)
    val_annotations: Optional[str] = None  # official validation annotation file
    test_annotations: Optional[str] = None  # official test annotation file (often without labels)
    label_file: Optional[str] = None  # official labels / vocab / categories file
    backend: Literal["auto", "frames", "video"] = "auto"  # JPEG frame folders or video files; auto: from the data; ours
    frame_template: str = "{:05d}.jpg"  # file name of frame i (1-based) inside a frame folder
    frame_start: int = 1  # index of the first frame file on disk (SS-V1 starts at 00001.jpg)
    video_ext: str = ""  # video file extension, '' means the dataset's default (webm for SS-V2, mp4 otherwise)
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
    train_size: int = 4000  # synthetic: number of training clips
    val_size: int = 800  # synthetic: number of validation (and test) clips
    synthetic_frames: int = 16  # synthetic: frames in each generated video
    synthetic_resolution: list[int] = field(default_factory=lambda: [64, 64])  # synthetic: generated H x W
    synthetic_classes: int = 8  # synthetic: number of motion classes
    synthetic_seed: int = 0  # synthetic: seed; videos are a pure function of (seed, split, index)


@dataclass
class TrainConfig:
    """Optimization recipe (Appendix A). Learning rate is given per 64 clips and scaled to the real batch."""

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
    scaled_lr: float = 0.0  # derived: lr * total_batch / lr_reference_batch (any given value is replaced)
    total_batch: int = 0  # derived: batch_size * world_size * accumulate (any given value is replaced)


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
    world_size: int = 1  # derived: number of processes (from torchrun's WORLD_SIZE; any given value is replaced)


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


def _all_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        keys.append(name)
        if dataclasses.is_dataclass(hints[f.name]):
            keys.extend(_all_keys(hints[f.name], name + "."))
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
            valid = _all_keys(Config)
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
            raise ConfigError(
                f"{source}: `{dotted}` expects {_type_name(tp)}, got {value!r} ({type(value).__name__})"
            ) from None


def parse_overrides(overrides: list[str] | None) -> dict:
    """Turn ``["train.lr=0.01", "model.transform.kernel_size=[3,3,3]"]`` into a nested dict.

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
# Validation: derived values and cross-field rules.
# --------------------------------------------------------------------------------------------------
def _resolve_dataset_defaults(cfg: Config) -> None:
    """``model.num_classes: 0`` and ``data.backend: auto`` where the dataset alone decides them (no file is
    read here). A ``list`` dataset keeps them until its files are read (``rsanet.data.check.resolve_list``)."""
    d, m = cfg.data, cfg.model
    if m.num_classes == 0:
        if d.dataset == "synthetic":
            m.num_classes = d.synthetic_classes
        elif d.dataset in OFFICIAL_CLASSES:
            m.num_classes = OFFICIAL_CLASSES[d.dataset]
    if d.backend == "auto" and d.dataset in OFFICIAL_BACKEND:
        d.backend = OFFICIAL_BACKEND[d.dataset]


def validate(cfg: Config, world_size: int | None = None, source: str = "config") -> Config:
    """Fill in derived values and check rules that involve several keys. Returns ``cfg``."""
    if world_size is None:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
    m, t, d, tr, te = cfg.model, cfg.model.transform, cfg.data, cfg.train, cfg.test

    def fail(msg: str) -> None:
        raise ConfigError(f"{source}: {msg}")

    _resolve_dataset_defaults(cfg)
    if m.num_classes < 0 or (m.num_classes == 0 and d.dataset != "list"):
        fail(f"`model.num_classes` must be positive (or 0: the dataset's class count), got {m.num_classes}")
    positive = {
        "model.num_segments": m.num_segments, "model.width": m.width,
        "model.transform.queries": t.queries, "train.batch_size": tr.batch_size, "train.accumulate": tr.accumulate,
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

    n_stages = 4
    if t.type == "conv2d":
        pass  # TSN keeps torchvision's 3x3 conv in every block; positions are not used
    elif len(t.positions) != n_stages:
        fail(f"`model.transform.positions` needs one list per stage ({n_stages}), got {t.positions}")
    depths = {"resnet18": [2, 2, 2, 2], "resnet34": [3, 4, 6, 3], "resnet50": [3, 4, 6, 3],
              "resnet101": [3, 4, 23, 3]}[m.arch]
    for stage, (blocks, depth) in enumerate(zip(t.positions if t.type != "conv2d" else [], depths)):
        for b in blocks:
            if not 0 <= b < depth:
                fail(f"`model.transform.positions` stage {stage} has block {b}, but {m.arch} has "
                     f"{depth} blocks there (0..{depth - 1})")
    if len(t.kernel_size) != 3 or any(k < 1 for k in t.kernel_size):
        fail(f"`model.transform.kernel_size` must be three positive sizes [t, h, w], got {t.kernel_size}")
    if t.l2_eps < 0:
        fail(f"`model.transform.l2_eps` must be >= 0, got {t.l2_eps}")
    if t.latent_dim < 0 or t.groups < 0:
        fail("`model.transform.latent_dim` and `model.transform.groups` must be >= 0 (0 means C_Q)")
    if not t.kernel or len(set(t.kernel)) != len(t.kernel):
        fail(f"`model.transform.kernel` must be a non-empty set of basic/relational, got {t.kernel}")
    if not t.context or len(set(t.context)) != len(t.context):
        fail(f"`model.transform.context` must be a non-empty set of basic/relational, got {t.context}")
    if not t.attention or len(set(t.attention)) != len(t.attention):
        fail(f"`model.transform.attention` must be a non-empty set of content/position, got {t.attention}")
    if len(d.resize) != 2 or len(d.mean) != 3 or len(d.std) != 3:
        fail("`data.resize` needs [H, W] and `data.mean`/`data.std` three values each")
    if te.resize and len(te.resize) != 2:
        fail(f"`test.resize` needs [H, W] or [], got {te.resize}")
    if not d.scales or any(not 0 < s <= 1 for s in d.scales):
        fail(f"`data.scales` must be in (0, 1], got {d.scales}")
    if d.dataset == "synthetic":
        if d.train_size <= 0 or d.val_size <= 0 or d.synthetic_frames <= 0:
            fail("synthetic data needs positive `data.train_size`, `data.val_size` and `data.synthetic_frames`")
        if len(d.synthetic_resolution) != 2:
            fail(f"`data.synthetic_resolution` needs [H, W], got {d.synthetic_resolution}")
    try:
        d.frame_template.format(1)
    except (IndexError, KeyError, ValueError) as e:
        fail(f"`data.frame_template` {d.frame_template!r} cannot format a frame index: {e}")

    # Derived values.
    cfg.runtime.world_size = world_size
    tr.total_batch = tr.batch_size * world_size * tr.accumulate
    tr.scaled_lr = tr.lr * tr.total_batch / tr.lr_reference_batch
    return cfg


# --------------------------------------------------------------------------------------------------
# Public loading / dumping.
# --------------------------------------------------------------------------------------------------
def config_to_dict(cfg: Any) -> dict:
    """Plain nested dict of a config (or of one section)."""
    return dataclasses.asdict(cfg)


def config_from_dict(data: dict, source: str = "dict", world_size: int | None = None) -> Config:
    """Build and validate a Config from a nested dict (e.g. the one stored in a checkpoint)."""
    cfg = Config()
    _merge(cfg, data or {}, source)
    return validate(cfg, world_size=world_size, source=source)


def default_work_dir(config_path: str | os.PathLike) -> str:
    """``work_dirs/<name>`` for ``<name>.yaml``; a config inside a ``configs`` folder keeps its sub-folders
    (``configs/synthetic/rsa.yaml`` -> ``work_dirs/synthetic/rsa``)."""
    path = Path(config_path)
    parts = path.with_suffix("").parts
    if "configs" in parts[:-1]:
        below = parts[len(parts) - 1 - parts[::-1].index("configs") + 1:]
        return str(Path("work_dirs", *below))
    return str(Path("work_dirs") / path.stem)


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None,
                world_size: int | None = None) -> Config:
    """Defaults, then the YAML file at ``path`` (if any), then ``overrides``; then :func:`validate`.

    Raises :class:`ConfigError` naming the file (or ``--opts``), the key and the closest valid key.
    """
    cfg = Config()
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = read_yaml(path.read_text(), str(path))
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        _merge(cfg, data or {}, source)
        if not cfg.runtime.work_dir:
            cfg.runtime.work_dir = default_work_dir(path)
    if overrides:
        _merge(cfg, parse_overrides(overrides), "--opts")
        source = f"{source} + --opts"
    if not cfg.runtime.work_dir:
        cfg.runtime.work_dir = str(Path("work_dirs") / "default")
    return validate(cfg, world_size=world_size, source=source)


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
