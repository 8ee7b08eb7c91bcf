"""ImageNet initialisation of a TSN model from a torchvision checkpoint of its backbone.

``model.pretrained`` is a local file or ``torchvision``: the torchvision weights its backbone names
(``WEIGHTS`` in :data:`rsanet.backbones.BACKBONES`; ``IMAGENET1K_V1`` for the ResNet family, and ResNet-50's are
the ones the authors' code loaded), found through torchvision's weights API and fetched once into the torch hub
cache (``$TORCH_HOME/hub/checkpoints``, by default ``~/.cache/torch/hub``) with a progress bar and torch.hub's
SHA-256 prefix check, and read from there afterwards; offline, a filled cache just works, and an empty one is
an error that names the file to put where.

Every tensor of the checkpoint is loaded, except the classifier (``fc``) and the 3x3 convs that a transform
replaced; those are reported as skipped. Any other missing or unexpected key, or a shape mismatch, is an
error that names the keys (and, for a checkpoint of another depth, says which ResNet it looks like).

The other layers of a block that holds a transform (its 1x1 convs, BNs and downsample) exist in the
checkpoint too. ``model.transform_block_init`` decides what they start from: ``msra`` (the default, the
paper's Appendix A: "we randomly initialize the weights of bottlenecks including RSA layers with the MSRA
method ... and set the gamma of the last BN to zero") keeps the model's own init and reports them as
``reinitialized``; ``pretrained`` copies them from the checkpoint.
"""
from __future__ import annotations

import contextlib
import logging
import os
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from rsanet.backbones import BACKBONES, backbone

log = logging.getLogger(__name__)

_MAX_LISTED = 20  # keys named in one error message before "... and N more"
TORCHVISION = "torchvision"  # model.pretrained value: the torchvision weights of model.arch (its WEIGHTS)


@dataclass
class PretrainedReport:
    """What :func:`load_pretrained` did: ``loaded`` tensor keys and ``skipped`` module names (sorted)."""

    path: str
    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # e.g. ["fc", "layer1.2.conv2", ...]
    reinitialized: list[str] = field(default_factory=list)  # e.g. ["layer1.2.bn1", "layer1.2.conv1", ...]


class PretrainedMismatchError(RuntimeError):
    """The checkpoint does not fit the model (missing/unexpected keys or shape mismatches)."""


class PretrainedFileError(ValueError):
    """``model.pretrained`` names a file that is not a checkpoint of tensors (text, a pickle, ...)."""


class PretrainedUnavailableError(FileNotFoundError):
    """``model.pretrained: torchvision`` with an empty cache and no way to download; says where the file goes."""


def torchvision_weights(arch: str) -> tuple[str, Path]:
    """(URL, cache file) of the torchvision weights of backbone ``arch`` (e.g. ``resnet50``: IMAGENET1K_V1)."""
    from torchvision.models import get_weight

    weights = getattr(backbone(arch), "WEIGHTS", None)
    if not weights:
        with_weights = [name for name, entry in BACKBONES.items() if getattr(entry, "WEIGHTS", None)]
        raise ValueError(f"model.pretrained=torchvision: no torchvision ImageNet weights for {arch}; "
                         f"model.arch must be one of {', '.join(with_weights)}, or model.pretrained a file")
    url = get_weight(weights).url
    return url, Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


@contextlib.contextmanager
def _lock(path: Path):
    """An exclusive lock next to ``path``, so that the processes of one machine download a file only once."""
    try:
        import fcntl
    except ImportError:  # not POSIX: concurrent downloads are still safe (torch.hub moves a finished file)
        yield
        return
    with open(path.with_name(path.name + ".lock"), "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fetch_torchvision_weights(arch: str, progress: bool = True) -> Path:
    """The cache file of :func:`torchvision_weights`, downloaded first if it is not there (hash-checked)."""
    url, dst = torchvision_weights(arch)
    if dst.is_file():
        return dst
    hint = (f"put {url} at {dst} (the torch hub cache; TORCH_HOME moves it), or set model.pretrained to the "
            "path of that file")
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        with _lock(dst):
            if not dst.is_file():  # another process may have finished it while this one waited
                log.info("downloading %s to %s", url, dst)
                match = torch.hub.HASH_REGEX.search(dst.name)
                torch.hub.download_url_to_file(url, str(dst), match.group(1) if match else None, progress=progress)
    except Exception as e:  # offline (URLError), a proxy error page (hash mismatch), a read-only cache, ...
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise PretrainedUnavailableError(f"model.pretrained=torchvision: {arch} ImageNet weights are not cached "
                                         f"and could not be downloaded ({reason}); {hint}") from None
    return dst


def resolve_pretrained(value: str | os.PathLike, arch: str) -> Path:
    """The file that ``model.pretrained`` (a path or ``torchvision``) stands for; fetches torchvision's."""
    if str(value) == TORCHVISION:
        return fetch_torchvision_weights(arch)
    path = Path(value).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"pretrained checkpoint not found: {path} (see pretrained/README.md, use "
                                "model.pretrained=torchvision, or model.pretrained=null to train from scratch)")
    return path


def check_pretrained(mcfg) -> None:
    """Fail early (before any process group) on a ``model.pretrained`` that cannot be loaded into ``mcfg``'s
    model: a missing or unreadable file, torchvision weights that cannot be fetched, or a non-standard width."""
    if not mcfg.pretrained:
        return
    if str(mcfg.pretrained) == TORCHVISION and mcfg.width != 64:
        raise PretrainedMismatchError(_width_hint("model.pretrained=torchvision", 64, mcfg.width))
    ckpt = read_state_dict(resolve_pretrained(mcfg.pretrained, mcfg.arch))
    stem = ckpt.get("conv1.weight")
    if stem is not None and stem.dim() == 4 and stem.shape[0] != mcfg.width:
        raise PretrainedMismatchError(_width_hint(f"model.pretrained={mcfg.pretrained}", stem.shape[0], mcfg.width))


def _width_hint(source: str, ckpt_width: int, width: int) -> str:
    return (f"{source} holds a ResNet of width {ckpt_width} (stem channels), but model.width={width}: "
            f"set model.width={ckpt_width} to use these weights, or model.pretrained=null to train from scratch")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file: a raw state dict or one under ``state_dict``/``model``; ``module.`` stripped.

    Loaded with ``weights_only=True`` (no code from the file is run).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained checkpoint not found: {path} (see pretrained/README.md)")
    try:
        with warnings.catch_warnings():  # a plain pickle makes torch warn about its protocol before failing
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only load failed" in str(e).lower() and zipfile.is_zipfile(path):  # a torch.save file
            raise PretrainedFileError(f"{path}: holds Python objects besides tensors, which are not loaded "
                                      "(weights_only=True); save only its state dict of tensors") from None
        raise PretrainedFileError(_not_a_checkpoint(path, e)) from None
    except OSError as e:
        raise PretrainedFileError(f"{path}: cannot be read ({e})") from None
    except Exception as e:  # text or other bytes make the unpickler fail in many ways (KeyError, IndexError, ...)
        raise PretrainedFileError(_not_a_checkpoint(path, e)) from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise PretrainedMismatchError(f"{path}: expected a state dict of tensors, got {type(obj).__name__}")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def _not_a_checkpoint(path: Path, error: Exception) -> str:
    reason = str(error).splitlines()[0] if str(error) else type(error).__name__
    return (f"{path}: not a PyTorch checkpoint ({type(error).__name__}: {reason}); model.pretrained must be a "
            "torchvision ResNet state dict (.pth), or torchvision to fetch one")


def describe_resnet(state) -> str:
    """A guess at the ResNet a state dict (or its keys) belongs to, e.g. 'resnet18-like (basic blocks
    [2, 2, 2, 2])'; with the tensors, ResNeXt and Wide ResNet are told apart by their grouped 3x3 convs."""
    blocks = [0, 0, 0, 0]
    bottleneck = False
    for k in state:
        m = re.match(r"layer([1-4])\.(\d+)\.(conv\d)\.", k)
        if m:
            stage, idx = int(m.group(1)) - 1, int(m.group(2))
            blocks[stage] = max(blocks[stage], idx + 1)
            bottleneck |= m.group(3) == "conv3"
    groups, per_group = 1, 64
    conv2, stem = (state.get(k) for k in ("layer1.0.conv2.weight", "conv1.weight")) if isinstance(state, dict) \
        else (None, None)
    if bottleneck and getattr(conv2, "dim", lambda: 0)() == 4 and getattr(stem, "dim", lambda: 0)() == 4:
        groups = conv2.shape[0] // conv2.shape[1]  # (width, width / groups, 3, 3)
        per_group = conv2.shape[1] * 64 // stem.shape[0]  # channels per group at a 64-channel stem
    kind = "bottleneck" if bottleneck else "basic"
    name = next((n for n, e in BACKBONES.items() if list(getattr(e, "DEPTHS", [])) == blocks
                 and getattr(e, "bottleneck", None) == bottleneck
                 and (not bottleneck or (e.groups, e.width_per_group) == (groups, per_group))), "an unknown ResNet")
    return f"{name} ({kind} blocks {blocks})"


def _listed(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f", ... and {len(keys) - _MAX_LISTED} more" if len(keys) > _MAX_LISTED else "")


def _skipped_module(key: str, replaced: set[str]) -> str | None:
    """The skipped module a key belongs to (``fc`` or a replaced conv), or None."""
    module = key.rsplit(".", 1)[0]
    if module == "fc":
        return "fc"
    for name in replaced:
        if module == name or module.startswith(name + "."):
            return name
    return None


def _transform_block(key: str, blocks: set[str]) -> str | None:
    """The module (e.g. ``layer3.1.bn3``) a key belongs to when it lies in one of ``blocks``, else None."""
    module = key.rsplit(".", 1)[0]
    return module if any(module.startswith(b + ".") for b in blocks) else None


def load_pretrained(model: nn.Module, path: str | os.PathLike, transform_block_init: str = "msra") -> PretrainedReport:
    """Copy the torchvision weights at ``path`` (or, for ``"torchvision"``, the cached weights of the model's
    backbone) into ``model``, strictly.

    ``model`` is a :class:`rsanet.models.TSN`. Skipped (and reported): ``fc`` and the convs listed in
    ``model.replaced``. They keep their own init.
    With ``transform_block_init="msra"`` the other layers of the blocks holding those convs keep their own
    init too (reported as ``reinitialized``); with ``"pretrained"`` they are loaded.
    """
    if transform_block_init not in ("msra", "pretrained"):
        raise ValueError(f"transform_block_init must be 'msra' or 'pretrained', got {transform_block_init!r}")
    own = model.state_dict()
    if str(path) == TORCHVISION:  # the weights of the model's own backbone
        path = fetch_torchvision_weights(model.arch)
    ckpt = read_state_dict(path)
    stem, own_stem = ckpt.get("conv1.weight"), own.get("conv1.weight")
    if stem is not None and own_stem is not None and stem.dim() == 4 and stem.shape[0] != own_stem.shape[0]:
        raise PretrainedMismatchError(_width_hint(str(path), stem.shape[0], own_stem.shape[0]))
    replaced = set(getattr(model, "replaced", []))
    blocks = {name.rsplit(".", 1)[0] for name in replaced} if transform_block_init == "msra" else set()
    report = PretrainedReport(path=str(path))
    unexpected, mismatched = [], []
    for key, value in ckpt.items():
        if _skipped_module(key, replaced) is not None:
            continue
        if key not in own:
            unexpected.append(key)
        elif own[key].shape != value.shape:
            mismatched.append(f"{key} (checkpoint {tuple(value.shape)}, model {tuple(own[key].shape)})")
    missing = [k for k in own if k not in ckpt and _skipped_module(k, replaced) is None]
    if unexpected or missing or mismatched:
        _raise_mismatch(path, model, ckpt, unexpected, missing, mismatched)

    kept = {k for k in ckpt if _skipped_module(k, replaced) is None}
    reinit = {k for k in kept if _transform_block(k, blocks)}
    to_load = {k: ckpt[k] for k in kept - reinit}
    with torch.no_grad():
        for key, value in to_load.items():
            own[key].copy_(value)
    report.loaded = sorted(to_load)
    report.skipped = sorted({"fc"} | replaced)
    report.reinitialized = sorted({_transform_block(k, blocks) for k in reinit})
    log.info("loaded %d tensors from %s; skipped (no counterpart, own init): %s", len(report.loaded), path,
             ", ".join(report.skipped))
    if report.reinitialized:
        log.info("kept MSRA init (paper, model.transform_block_init=msra) for the other layers of the %d blocks "
                 "holding a transform: %s", len(blocks), ", ".join(report.reinitialized))
    return report


def _raise_mismatch(path, model, ckpt, unexpected, missing, mismatched) -> None:
    arch_ckpt, arch_model = describe_resnet(ckpt), describe_resnet(model.state_dict())
    lines = [f"pretrained checkpoint {path} does not fit the model"]
    if arch_ckpt.split(" ")[0] != arch_model.split(" ")[0]:
        lines[0] += f": the checkpoint looks like {arch_ckpt}, the model is {arch_model}"
    if unexpected:
        lines.append(f"unexpected keys ({len(unexpected)}): {_listed(unexpected)}")
    if missing:
        lines.append(f"missing keys ({len(missing)}): {_listed(missing)}")
    if mismatched:
        lines.append(f"shape mismatches ({len(mismatched)}): {_listed(mismatched)}")
    raise PretrainedMismatchError("\n  ".join(lines))
