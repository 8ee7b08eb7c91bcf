"""Model weights from any checkpoint file: ours, a bare state dict, or the authors' release (converted).

* :func:`read_model_weights` reads a file (``weights_only=True``) and recognizes its format from its keys:
  our training checkpoint (``model`` + ``config``), a bare state dict of our model, or the authors'
  ``.pth.tar`` (KimManjin/RSA; ``state_dict`` with ``module.base_model.*`` keys), which is converted on the
  fly (:mod:`rsanet.models.official`) and logged as converted.
* :func:`load_model_weights` loads them strictly into a model built from a config. For the authors' files,
  whose network is known from the tensor shapes alone, a config that does not fit is reported as the config
  keys that would fit (``--opts model.num_classes=48 ...``).
* :func:`init_from_checkpoint` starts a training run from a checkpoint (``model.init_from``): every tensor
  is loaded, except a classifier of another class count, which keeps the model's own init and is reported.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from rsanet.config import ModelConfig
from rsanet.engine.checkpoint import CheckpointError, load_checkpoint
from rsanet.models.official import (
    AuthorsFormatError,
    authors_to_native,
    describe,
    format_overrides,
    is_authors_state,
    model_mismatches,
    yaml_flow,
)
from rsanet.runlog import get_logger

__all__ = ["ModelWeights", "InitReport", "read_model_weights", "load_model_weights", "init_from_checkpoint"]

_CLASSIFIER = ("fc.weight", "fc.bias")
_LISTED = 6  # keys named in one message before "..."


@dataclass
class ModelWeights:
    """The tensors of a checkpoint file, in our parameter names, and what is known about them."""

    path: Path
    state: dict[str, torch.Tensor]
    kind: str  # "rsanet" (our training checkpoint), "state_dict" (bare) or "authors" (converted)
    config: Optional[dict] = None  # the resolved config stored in our checkpoints
    inferred: Optional[dict] = None  # authors' files: model config keys inferred from the tensor shapes
    info: dict = field(default_factory=dict)  # authors': epoch, arch, best_prec1; ours: epoch, best_top1

    def describe(self) -> str:
        """One line for the log."""
        if self.kind != "authors":
            return f"{self.path}: {'RSANet checkpoint' if self.kind == 'rsanet' else 'model state dict'}"
        meta = ", ".join(f"{k} {v}" for k, v in self.info.items())
        return (f"{self.path}: authors' checkpoint (KimManjin/RSA format{', ' + meta if meta else ''}) converted "
                f"to RSANet's layout: {describe(self.inferred)}")


def _listed(keys: list[str]) -> str:
    return ", ".join(keys[:_LISTED]) + (f" ... ({len(keys)} in all)" if len(keys) > _LISTED else "")


def read_model_weights(path: str | os.PathLike) -> ModelWeights:
    """Read a checkpoint of any supported format (see the module doc); raises :class:`CheckpointError`
    naming the file when it is missing, truncated, or holds no model we can read."""
    path = Path(path)
    obj = load_checkpoint(path, require_training_state=False)
    inner = obj.get("state_dict")
    state = inner if isinstance(inner, dict) else obj
    if is_authors_state(state):
        try:
            native, inferred = authors_to_native(state)
        except AuthorsFormatError as e:
            raise CheckpointError(f"{path} has the authors' key layout (module.base_model.*) but is not an "
                                  f"RSANet/TSN-ResNet of their code that can be converted: {e}") from None
        info = {k: obj[k] for k in ("epoch", "arch", "best_prec1") if isinstance(obj.get(k), (int, float, str))}
        weights = ModelWeights(path, native, "authors", inferred=inferred, info=info)
        get_logger().info(weights.describe())
        return weights
    if isinstance(obj.get("model"), dict):
        info = {k: obj[k] for k in ("epoch", "best_top1") if isinstance(obj.get(k), (int, float))}
        return ModelWeights(path, obj["model"], "rsanet", config=obj.get("config"), info=info)
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return ModelWeights(path, obj, "state_dict")
    raise CheckpointError(f"{path} holds neither an RSANet checkpoint, nor a model state dict, nor an authors' "
                          f"checkpoint (top-level keys: {_listed(sorted(map(str, obj)))})")


def _fit_problem(weights: ModelWeights, mcfg: ModelConfig, ignore: tuple[str, ...] = ()) -> Optional[str]:
    """For the authors' files: the config keys that do not fit the checkpoint, as one sentence, or None."""
    if weights.kind != "authors":
        return None
    mismatches = [m for m in model_mismatches(weights.inferred, mcfg) if m[0] not in ignore]
    if not mismatches:
        return None
    keys = "; ".join(f"{key} is {yaml_flow(have)}, the checkpoint has {yaml_flow(want)}"
                     for key, have, want in mismatches)
    return f"{keys}. To use it, set --opts {format_overrides(mismatches)}"


def _stored_hint(weights: ModelWeights, mcfg: ModelConfig) -> str:
    """For our checkpoints that store their config: the model keys in which it differs from ``mcfg``."""
    stored = (weights.config or {}).get("model")
    if not stored:
        return ""
    try:
        mismatches = model_mismatches(stored, mcfg)
    except (KeyError, TypeError):  # a config of an older layout
        return ""
    if not mismatches:
        return ""
    return f" (it was trained with --opts {format_overrides(mismatches)})"


def load_model_weights(model: nn.Module, weights: ModelWeights, mcfg: ModelConfig) -> None:
    """Load ``weights`` into ``model`` (built from ``mcfg``), strictly; :class:`CheckpointError` names the file
    and, for the authors' files, the config keys that would fit."""
    problem = _fit_problem(weights, mcfg)
    if problem:
        raise CheckpointError(f"{weights.path} (authors' checkpoint: {describe(weights.inferred)}) does not fit "
                              f"the model of this config: {problem}")
    try:
        model.load_state_dict(weights.state)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:600]
        raise CheckpointError(f"{weights.path} does not fit the model of this config{_stored_hint(weights, mcfg)}: "
                              f"{detail}") from None


@dataclass
class InitReport:
    """What :func:`init_from_checkpoint` did."""

    path: str
    kind: str
    loaded: list[str] = field(default_factory=list)  # tensor keys copied from the checkpoint
    reinitialized: list[str] = field(default_factory=list)  # e.g. ["fc.weight", "fc.bias"]
    reason: str = ""  # why they were re-initialized


def init_from_checkpoint(model: nn.Module, path: str | os.PathLike, mcfg: ModelConfig) -> InitReport:
    """Copy every tensor of the checkpoint at ``path`` (any format of :func:`read_model_weights`) into
    ``model``; a classifier whose class count differs keeps the model's own init (and is reported).

    Any other missing, unexpected or differently shaped tensor is a :class:`CheckpointError` naming the keys
    (and, for the authors' files, the config keys that would fit): fine-tuning starts from the whole network.
    """
    weights = read_model_weights(path)
    problem = _fit_problem(weights, mcfg, ignore=("model.num_classes", "model.transform.rsa.l2_eps"))
    if problem:
        raise CheckpointError(f"model.init_from: {weights.path} holds another network than this config "
                              f"({describe(weights.inferred)}): {problem}")
    own, theirs = model.state_dict(), weights.state
    # another class count: the classifier (weight (K, C) and bias (K,)) keeps the model's own init
    both = all(k in own and k in theirs for k in _CLASSIFIER)
    swap = list(_CLASSIFIER) if both and own["fc.weight"].shape[1:] == theirs["fc.weight"].shape[1:] and \
        own["fc.bias"].shape != theirs["fc.bias"].shape else []
    missing = [k for k in own if k not in theirs]
    unexpected = [k for k in theirs if k not in own]
    wrong = [f"{k} {tuple(theirs[k].shape)} (model {tuple(own[k].shape)})" for k in own
             if k in theirs and k not in swap and own[k].shape != theirs[k].shape]
    if missing or unexpected or wrong:
        parts = [f"{what} ({len(keys)}): {_listed(keys)}" for what, keys in
                 (("missing", missing), ("unexpected", unexpected), ("shape mismatches", wrong)) if keys]
        raise CheckpointError(f"model.init_from: {weights.path} does not fit the model of this config"
                              f"{_stored_hint(weights, mcfg)}: " + "; ".join(parts))
    report = InitReport(str(weights.path), weights.kind)
    with torch.no_grad():
        for key, value in theirs.items():
            if key not in swap:
                own[key].copy_(value)
                report.loaded.append(key)
    if swap:
        report.reinitialized = swap
        report.reason = (f"the checkpoint's classifier has {theirs['fc.weight'].shape[0]} classes, "
                         f"model.num_classes is {mcfg.num_classes}")
    return report
