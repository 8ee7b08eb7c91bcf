"""Checkpoint conversion between the authors' release format (KimManjin/RSA) and ours (tools/convert_checkpoint.py).

* :func:`to_native`: an authors' ``.pth.tar`` -> our checkpoint dict: ``model`` (the converted state dict),
  ``config`` (the resolved config, checked to fit the tensors), ``format`` and ``source`` (where it came
  from: file, SHA-256, their epoch/arch/best_prec1). It loads wherever one of our checkpoints does, and the
  tools that read a stored config (predict, visualize_kernels, export) then need no ``--config``.
* :func:`to_authors`: one of our checkpoints (or a bare state dict with its config) -> the dict their
  ``main.py --resume`` reads (``epoch``, ``arch``, ``state_dict``, ``best_prec1``).

The tensor mapping is :mod:`rsanet.models.official`. Their files do not store the number of frames T, so a
conversion into ours needs a config that sets ``model.num_segments``.
"""
from __future__ import annotations

import hashlib
import os
from typing import Optional

from rsanet.config import Config, ConfigError, config_from_dict, config_to_dict
from rsanet.engine.checkpoint import CHECKPOINT_FORMAT, CheckpointError
from rsanet.engine.weights import ModelWeights, load_model_weights
from rsanet.models.official import AuthorsFormatError, authors_checkpoint, native_to_authors, yaml_flow

__all__ = ["sha256", "to_native", "to_authors", "inferred_overrides"]


def sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def inferred_overrides(weights: ModelWeights) -> list[str]:
    """``--opts`` strings that set the model keys inferred from an authors' file (``model.arch=resnet50``, ...)."""
    def flat(prefix: str, node: dict):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from flat(f"{prefix}{key}.", value)
            else:
                yield f"{prefix}{key}={yaml_flow(value)}"

    return list(flat("model.", weights.inferred))


def to_native(weights: ModelWeights, cfg: Optional[Config]) -> dict:
    """Our checkpoint dict for an authors' file read by :func:`read_model_weights` (see the module doc).

    ``cfg`` must fit the file's tensors (the error names the config keys that would); None is refused,
    because only a config can say how many frames the model takes.
    """
    path = weights.path
    if weights.kind != "authors":
        raise CheckpointError(f"{path} is not an authors' checkpoint (it is a {weights.kind.replace('_', ' ')}); "
                              "to convert one of ours into their format, pass --to official")
    if cfg is None:
        raise ConfigError(f"{path} does not store the number of frames T: pass --config (e.g. "
                          "configs/ssv2_rsa_16f.yaml for their 16-frame SS-V2 model) or --opts model.num_segments=16")
    from rsanet.models import build_model

    cfg.model.pretrained = cfg.model.init_from = None  # the converted file holds every weight
    load_model_weights(build_model(cfg), weights, cfg.model)  # checks the fit, naming the config keys
    source = {"format": "authors (KimManjin/RSA .pth.tar)", "file": str(path.resolve()),
              "sha256": sha256(path), **{f"authors_{k}": v for k, v in weights.info.items()}}
    return {"format": CHECKPOINT_FORMAT, "model": weights.state, "config": config_to_dict(cfg), "source": source}


def to_authors(weights: ModelWeights, cfg: Optional[Config]) -> dict:
    """Their checkpoint dict for our checkpoint (or bare state dict) read by :func:`read_model_weights`; the
    model config is ``cfg``, else the one stored in the checkpoint. Refuses models their code cannot build."""
    path = weights.path
    if weights.kind == "authors":
        raise CheckpointError(f"{path} is already an authors' checkpoint")
    if cfg is None:
        if weights.config is None:
            raise ConfigError(f"{path} is a bare state dict without a stored config: pass --config")
        cfg = config_from_dict(weights.config, source=f"config stored in {path}")
    m = cfg.model
    if m.arch != "resnet50" or m.width != 64:
        raise AuthorsFormatError(f"model.arch={m.arch}, model.width={m.width}: the authors' code builds only the "
                                 "64-wide ResNet-50 (model.arch=resnet50, model.width=64)")
    from rsanet.models import build_model

    cfg.model.pretrained = cfg.model.init_from = None
    load_model_weights(build_model(cfg), weights, cfg.model)  # the state must be this config's network
    epoch, best = weights.info.get("epoch", 0), weights.info.get("best_top1", 0.0)
    return authors_checkpoint(native_to_authors(weights.state, m), epoch=epoch, best_prec1=best)
