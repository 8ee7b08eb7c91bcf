"""The authors' checkpoint format (KimManjin/RSA, the paper's released models) and exact conversion to ours.

Their files (``*.pth.tar``) are dicts with ``epoch``, ``arch``, ``best_prec1`` and a ``state_dict`` saved from
``DataParallel(TSN(...))``: every key starts with ``module.``, the backbone lies under ``module.base_model.``,
and every layer is 3D (``Conv3d`` with a temporal size of 1 where ours is 2D, ``BatchNorm3d``). The
classifier is ``module.new_fc`` (a ``Conv1d`` of shape (K, C, 1)) when they trained with dropout, else
``module.base_model.fc1``. Their network is our TSN-ResNet-50 (v1.5 bottlenecks, stride on the 3x3 conv,
the same stem, 1x1x1 downsample convs), with RSA layers as ``conv2`` of the blocks their ``position`` lists
(never block 0 of a stage). The head is the same too: per-frame pooling, classifier, mean over the T frames.

One of their RSA layers (``ops/rsa.py``; ``nh`` heads, query/key width ``dk``, value width ``dv``, latent
width ``dd``) maps onto ours (L = nh, C_Q = dk = dv, D = dd) tensor by tensor, where M = t*h*w runs over
the window in row-major order (the layout of a conv3d weight, as in :mod:`rsanet.ops.window`):

==========================================================  =======================================
theirs                                                      ours
==========================================================  =======================================
``projection`` (L*C_Q [+ C_Q] + C_Q, C_in, 1, 1, 1):        ``query``, ``key`` (relational kernel
rows q (head-major, l*C_Q + c), k, v                        only), ``value``
``P1`` (1, C_Q, D)                                          ``P1`` (D, C_Q) = P1[0]^T
no ``P1`` and no ``H1`` (kernel ``'V'``: the basic kernel   ``P1`` = identity (D = C_Q)
is q itself)
``H1`` (C_Q*D, 1, t, h, w), groups C_Q, out channel c*D+d   ``H1`` (M, C_Q, D), H1[m, c, d]
``H2`` (D, 1, t, h, w)                                      ``H2`` (M, D)
``G`` (C_Q, 1, t, h, w)                                     ``G`` (M, C_Q)
``I`` (1, C_Q, C_Q)                                         ``I`` (C_Q, C_Q)
==========================================================  =======================================

Their kernel types ``'V'``, ``'R'``, ``'VplusR'`` are our ``kernel`` [basic], [relational], [basic,
relational]; their feature types are our ``context`` in the same way. Their layer writes its output
channel-major (channel ``c*L + l``), ours head-major (``l*C_Q + c``). The conversion folds that
permutation into the next layers of the same bottleneck, ``bn2`` (affine and running statistics) and the
input channels of ``conv3``, so the converted network computes the same function, and the reverse
conversion applies the inverse.

Towards their format (:func:`native_to_authors`), two of our variants are rewritten into equivalent
tensors their layer can hold: a basic-only kernel folds its P1 into H2 (their ``'V'`` kernel has no P1:
``q P1^T H2^T = q (H2 P1)^T``, so H2' = H2 P1 with D' = C_Q), and grouped H1 (``groups`` G < C_Q) is
expanded to one slice per channel (their H1 always has C_Q groups). Both compute the same outputs; reading
the file back gives P1 = identity or G = C_Q. What their code cannot express at all (another norm, RSA in
block 0 of a stage, other transforms, basic blocks) is refused.

Their L2 norm is ``x / sqrt(|x|^2 + 1e-6)``, ours by default ``x / max(|x|, 1e-12)``; the two differ where a
query, key or value is nearly zero (by 2.6e-3 relative in one of the fixture layers, whose heads have two
channels). ``model.transform.rsa.l2_eps: 1e-6`` makes ours theirs, and the keys inferred from their files say so.

The file does not store the number of frames T: the config decides it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch

from rsanet.backbones import transform_slots
from rsanet.config import ModelConfig
from rsanet.ops import replaces

__all__ = ["AUTHORS_PREFIX", "AuthorsFormatError", "is_authors_state", "head_major_permutation",
           "RSALayerSpec", "rsa_from_authors", "rsa_to_authors", "authors_to_native", "native_to_authors",
           "model_mismatches", "format_overrides", "yaml_flow", "describe", "authors_checkpoint", "AUTHORS_L2_EPS"]

AUTHORS_PREFIX = "module.base_model."  # their backbone: DataParallel -> TSN.base_model
_NEW_FC = "module.new_fc."  # their classifier when trained with dropout > 0
_FC1 = "fc1."  # their classifier (under the backbone prefix) when trained without dropout
_RSA_KEYS = ("P1", "I", "projection.weight", "H1.weight", "H2.weight", "G.weight")  # their state-dict order
_BN_KEYS = ("weight", "bias", "running_mean", "running_var")
_ARCHS = {(3, 4, 6, 3): "resnet50", (3, 4, 23, 3): "resnet101"}  # bottleneck depths -> model.arch
AUTHORS_L2_EPS = 1e-6  # their L2norm: x / sqrt(sum x^2 + 1e-6) (ops/rsa.py)


class AuthorsFormatError(ValueError):
    """A state dict that cannot be converted between the authors' format and ours; the message says why."""


def is_authors_state(state: Mapping[str, Any]) -> bool:
    """Whether the keys of ``state`` are the authors' (``module.base_model.*``, ``module.new_fc.*``)."""
    return any(k.startswith(AUTHORS_PREFIX) or k.startswith(_NEW_FC) for k in state)


def head_major_permutation(queries: int, cq: int) -> torch.Tensor:
    """``perm`` with ``ours[j] = theirs[perm[j]]``: our channel j = l*C_Q + c is their channel c*L + l."""
    j = torch.arange(queries * cq)
    return (j % cq) * queries + j // cq


@dataclass(frozen=True)
class RSALayerSpec:
    """Hyper-parameters of one RSA layer, as the config would state them."""

    queries: int  # L
    cq: int  # C_Q
    latent: int  # D
    kernel_size: tuple[int, int, int]  # (t, h, w)
    kernel: tuple[str, ...]  # subset of ("basic", "relational"), canonical order
    context: tuple[str, ...]  # subset of ("basic", "relational"), canonical order


def _terms(basic: bool, relational: bool) -> tuple[str, ...]:
    return tuple(name for name, on in (("basic", basic), ("relational", relational)) if on)


def _expect(t: torch.Tensor, shape: tuple, what: str, where: str) -> None:
    if tuple(t.shape) != tuple(shape):
        raise AuthorsFormatError(f"{where}.{what} has shape {tuple(t.shape)}, expected {tuple(shape)}")


def rsa_from_authors(t: Mapping[str, torch.Tensor], planes: int, where: str) -> tuple[dict, RSALayerSpec]:
    """Their RSA tensors (names relative to the layer, e.g. ``projection.weight``) -> ours and the layer spec.

    ``planes`` is the layer's output width (L * C_Q); ``where`` names the layer in messages.
    """
    unknown = sorted(set(t) - set(_RSA_KEYS))
    if unknown or "H2.weight" not in t or "projection.weight" not in t:
        raise AuthorsFormatError(f"{where}: not an RSA layer of the authors' code (keys {sorted(t)})")
    h2 = t["H2.weight"]  # (D, 1, t, h, w)
    if h2.dim() != 5 or h2.shape[1] != 1:
        raise AuthorsFormatError(f"{where}.H2.weight has shape {tuple(h2.shape)}, expected (D, 1, t, h, w)")
    d, ks = h2.shape[0], tuple(int(k) for k in h2.shape[2:])
    m = math.prod(ks)
    has_p1, has_h1, has_g, has_i = ("P1" in t), ("H1.weight" in t), ("G.weight" in t), ("I" in t)
    kernel = _terms(has_p1 or not has_h1, has_h1)  # neither P1 nor H1: their kernel 'V' (basic, P1 = I)
    if has_p1 and not has_h1:
        raise AuthorsFormatError(f"{where}: P1 without H1 is not a kernel type of the authors' code")
    if has_i and not has_g:
        raise AuthorsFormatError(f"{where}: I without G is not a feature type of the authors' code")
    context = _terms(not has_g or has_i, has_g)
    cq = t["H1.weight"].shape[0] // d if has_h1 else d  # kernel 'V' multiplies q (dk) with H2 (dd): dk = dd
    if cq == 0 or planes % cq:
        raise AuthorsFormatError(f"{where}: query width {cq} does not divide the layer width {planes}")
    queries = planes // cq
    proj = t["projection.weight"]  # (L*C_Q [+ C_Q] + C_Q, C_in, 1, 1, 1)
    rows = queries * cq + (cq if has_h1 else 0) + cq
    if proj.dim() != 5 or proj.shape[0] != rows or tuple(proj.shape[2:]) != (1, 1, 1):
        raise AuthorsFormatError(
            f"{where}.projection.weight has shape {tuple(proj.shape)}, expected ({rows}, C_in, 1, 1, 1) for "
            f"{queries} heads of width {cq}: a value width other than the query width (dv != dk) cannot be "
            "expressed (RSANet uses one width C_Q for queries, keys and values)")
    out = {"query.weight": proj[:queries * cq].clone(), "value.weight": proj[rows - cq:].clone()}
    if has_h1:
        out["key.weight"] = proj[queries * cq:queries * cq + cq].clone()
        h1 = t["H1.weight"]
        _expect(h1, (cq * d, 1, *ks), "H1.weight", where)
        out["H1"] = h1.reshape(cq, d, m).permute(2, 0, 1).contiguous()  # (C_Q*D, 1, t, h, w) -> (M, C_Q, D)
    if has_p1:
        _expect(t["P1"], (1, cq, d), "P1", where)
        out["P1"] = t["P1"][0].t().contiguous()  # (1, C_Q, D) -> (D, C_Q)
    elif not has_h1:
        out["P1"] = torch.eye(cq, dtype=proj.dtype)  # their basic kernel is q itself
    out["H2"] = h2.reshape(d, m).t().contiguous()  # (D, 1, t, h, w) -> (M, D)
    if has_g:
        _expect(t["G.weight"], (cq, 1, *ks), "G.weight", where)
        out["G"] = t["G.weight"].reshape(cq, m).t().contiguous()  # (C_Q, 1, t, h, w) -> (M, C_Q)
    if has_i:
        _expect(t["I"], (1, cq, cq), "I", where)
        out["I"] = t["I"][0].clone()  # (1, C_Q, C_Q) -> (C_Q, C_Q)
    return out, RSALayerSpec(queries, cq, d, ks, kernel, context)


def rsa_to_authors(t: Mapping[str, torch.Tensor], kernel_size, where: str) -> dict:
    """Our RSA tensors (``query.weight``, ``P1``, ``H1``, ...) -> theirs (see the module doc for the rewrites)."""
    ks = tuple(int(k) for k in kernel_size)
    m = math.prod(ks)
    cq = t["value.weight"].shape[0]
    h2 = t["H2"]  # (M, D)
    if h2.shape[0] != m:
        raise AuthorsFormatError(f"{where}.H2 has {h2.shape[0]} window offsets, kernel_size {list(ks)} has {m}")
    if "norm_q.weight" in t:
        raise AuthorsFormatError(f"{where}: batchnorm on q, k, v cannot be expressed (their layer uses the L2 norm)")
    if "H1" not in t:  # basic-only kernel: their basic kernel is q itself, so P1 moves into H2
        h2 = h2 @ t["P1"]  # (M, D) @ (D, C_Q) -> (M, C_Q)
    d = h2.shape[1]
    parts = [t["query.weight"]] + ([t["key.weight"]] if "H1" in t else []) + [t["value.weight"]]
    out = {"projection.weight": torch.cat(parts, dim=0)}  # rows q, k, v
    if "H1" in t:
        h1 = t["H1"].repeat_interleave(cq // t["H1"].shape[1], dim=1)  # (M, G, D) -> (M, C_Q, D), one slice per channel
        out["H1.weight"] = h1.permute(1, 2, 0).reshape(cq * d, 1, *ks)  # (M, C_Q, D) -> (C_Q*D, 1, t, h, w)
        if "P1" in t:
            out["P1"] = t["P1"].t().unsqueeze(0).contiguous()  # (D, C_Q) -> (1, C_Q, D)
    out["H2.weight"] = h2.t().reshape(d, 1, *ks).contiguous()  # (M, D) -> (D, 1, t, h, w)
    if "G" in t:
        out["G.weight"] = t["G"].t().reshape(cq, 1, *ks).contiguous()  # (M, C_Q) -> (C_Q, 1, t, h, w)
    if "I" in t:
        out["I"] = t["I"].unsqueeze(0).clone()  # (C_Q, C_Q) -> (1, C_Q, C_Q)
    return out


# ------------------------------------------------------------------------------------------------
# Whole models.
# ------------------------------------------------------------------------------------------------
def _split_authors(state: Mapping[str, torch.Tensor]) -> tuple[dict, dict]:
    """(backbone tensors without the prefix, classifier tensors ``weight``/``bias``) of their state dict."""
    body, new_fc, fc1, unknown = {}, {}, {}, []
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise AuthorsFormatError(f"{key} is a {type(value).__name__}, not a tensor")
        if key.startswith(_NEW_FC):
            new_fc[key[len(_NEW_FC):]] = value
        elif key.startswith(AUTHORS_PREFIX + _FC1):
            fc1[key[len(AUTHORS_PREFIX + _FC1):]] = value
        elif key.startswith(AUTHORS_PREFIX):
            body[key[len(AUTHORS_PREFIX):]] = value
        else:
            unknown.append(key)
    if unknown:
        raise AuthorsFormatError(f"keys outside module.base_model and module.new_fc: {unknown[:5]}")
    if new_fc and fc1:
        raise AuthorsFormatError("both module.new_fc and module.base_model.fc1 hold a classifier")
    head = new_fc or fc1
    if set(head) != {"weight", "bias"} or head["weight"].dim() != 3 or head["weight"].shape[2] != 1:
        raise AuthorsFormatError("no Conv1d classifier (module.new_fc or module.base_model.fc1, weight (K, C, 1) "
                                 f"and bias) found; classifier keys: {sorted(head)}")
    return body, head


def _stage_depths(keys) -> tuple[list[int], bool]:
    """Blocks per stage (layer1..layer4) and whether the blocks are bottlenecks (have conv3)."""
    depths, bottleneck = [0, 0, 0, 0], False
    for k in keys:
        parts = k.split(".")
        if len(parts) > 2 and parts[0] in ("layer1", "layer2", "layer3", "layer4") and parts[1].isdigit():
            s = int(parts[0][-1]) - 1
            depths[s] = max(depths[s], int(parts[1]) + 1)
            bottleneck |= parts[2] == "conv3"
    return depths, bottleneck


def _consistent(specs: dict[str, RSALayerSpec], field: str, what: str):
    values = {name: getattr(s, field) for name, s in specs.items()}
    if len(set(values.values())) > 1:
        shown = ", ".join(f"{n}: {v}" for n, v in values.items())
        raise AuthorsFormatError(f"the RSA layers differ in {what} ({shown}); the config sets one value for all")
    return next(iter(values.values()))


def _infer_transform(specs: dict[str, RSALayerSpec], depths: list[int]) -> dict:
    """``model.transform`` keys that describe the RSA layers of ``specs`` (keyed ``layerS.B``)."""
    if not specs:
        return {"type": "conv2d"}
    positions = [[] for _ in depths]
    for name in specs:
        s, b = int(name[5]) - 1, int(name.split(".")[1])
        if b == 0:
            raise AuthorsFormatError(f"{name}.conv2 is an RSA layer in block 0 of a stage, which the authors' code "
                                     "never builds (their block 0 keeps the strided 3x3 conv)")
        positions[s].append(b)
    if all(s.latent == s.cq for s in specs.values()):
        latent = 0  # D = C_Q in every layer (their dd = 0)
    else:
        latent = _consistent(specs, "latent", "latent width D")
    rsa = {"kernel_size": list(_consistent(specs, "kernel_size", "kernel size")),
           "queries": _consistent(specs, "queries", "number of heads L"), "latent_dim": latent, "groups": 0,
           "kernel": list(_consistent(specs, "kernel", "kernel terms")),
           "context": list(_consistent(specs, "context", "context terms")), "norm": "l2", "l2_eps": AUTHORS_L2_EPS}
    return {"type": "rsa", "positions": [sorted(p) for p in positions], "rsa": rsa}


def _rsa_blocks(body: Mapping[str, torch.Tensor]) -> list[str]:
    """``layerS.B`` names of the blocks whose conv2 is an RSA layer (it has a projection)."""
    return sorted(k[:-len(".conv2.projection.weight")] for k in body if k.endswith(".conv2.projection.weight"))


def _convert_backbone(body: dict, rsa_blocks: list[str]) -> tuple[dict, dict]:
    """Their backbone tensors -> ours (RSA layers converted, bn2/conv3 permuted), and the layer specs."""
    out, specs = {}, {}
    for block in rsa_blocks:
        prefix = f"{block}.conv2."
        theirs = {k[len(prefix):]: body.pop(k) for k in [k for k in body if k.startswith(prefix)]}
        if any(f"{block}.{k}" not in body for k in [f"bn2.{b}" for b in _BN_KEYS] + ["conv3.weight"]):
            raise AuthorsFormatError(f"{block}: an RSA layer outside a bottleneck (no bn2/conv3 after it)")
        ours, spec = rsa_from_authors(theirs, body[f"{block}.bn2.weight"].shape[0], f"{block}.conv2")
        out.update({prefix + k: v for k, v in ours.items()})
        specs[block] = spec
        perm = head_major_permutation(spec.queries, spec.cq)
        for k in _BN_KEYS:
            out[f"{block}.bn2.{k}"] = body.pop(f"{block}.bn2.{k}")[perm].clone()
        out[f"{block}.conv3.weight"] = body.pop(f"{block}.conv3.weight")[:, perm].squeeze(2).clone()
    for key, value in body.items():
        if value.dim() == 5:  # Conv3d weight (C_out, C_in, t, k, k)
            if value.shape[2] != 1:
                raise AuthorsFormatError(f"{key} is a temporal convolution of shape {tuple(value.shape)} (their "
                                         "transform 'conv' or another 3D network), not a layer RSANet converts")
            value = value.squeeze(2)  # (C_out, C_in, 1, k, k) -> (C_out, C_in, k, k)
        out[key] = value
    return out, specs


def authors_to_native(state: Mapping[str, torch.Tensor]) -> tuple[dict, dict]:
    """Their state dict -> ``(our state dict, model config keys inferred from the shapes)``.

    The inferred keys (``arch``, ``width``, ``num_classes``, ``dropout`` and ``transform``) are a nested dict
    in the config's layout; ``num_segments`` (T) is not stored in their file. The converted tensors are
    checked against a model built from the inferred keys; anything that does not fit is an
    :class:`AuthorsFormatError` that names the keys.
    """
    body, head = _split_authors(state)
    depths, bottleneck = _stage_depths(body)
    arch = _ARCHS.get(tuple(depths)) if bottleneck else None
    if arch is None or "conv1.weight" not in body:
        kind = "bottleneck" if bottleneck else "basic"
        raise AuthorsFormatError(f"not an RSANet/TSN ResNet-50 of the authors' code: {kind} blocks {depths} "
                                 "(their code builds ResNet-50 only: bottleneck blocks [3, 4, 6, 3])")
    out, specs = _convert_backbone(dict(body), _rsa_blocks(body))
    out["fc.weight"] = head["weight"].squeeze(2)  # Conv1d (K, C, 1) -> Linear (K, C)
    out["fc.bias"] = head["bias"]
    model = {"arch": arch, "width": int(out["conv1.weight"].shape[0]), "num_classes": int(head["weight"].shape[0]),
             "transform": _infer_transform(specs, depths)}
    if not any(k.startswith(_NEW_FC) for k in state):
        model["dropout"] = 0.0  # fc1 is their classifier only when they trained without dropout
    return _check_against_model(out, model), model


def _check_against_model(state: Mapping[str, torch.Tensor], model: dict) -> dict:
    """``state`` in the order of a model built from ``model`` (config keys), whose tensors (and their shapes)
    it must hold exactly."""
    from rsanet.config import config_from_dict
    from rsanet.models.tsn import TSN

    mcfg = config_from_dict({"model": model}, source="keys inferred from the checkpoint").model
    with torch.device("meta"):  # shapes only: no memory, no init cost
        own = TSN(mcfg).state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})" for k in own
             if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        problems = [f"{what}: {', '.join(keys[:6])}{' ...' if len(keys) > 6 else ''}"
                    for what, keys in (("missing", missing), ("unexpected", unexpected), ("shape", wrong)) if keys]
        raise AuthorsFormatError("not the network of the authors' code (" + "; ".join(problems) + ")")
    return {k: state[k] for k in own}


def native_to_authors(state: Mapping[str, torch.Tensor], mcfg: ModelConfig) -> dict:
    """Our state dict (of a model built from ``mcfg``) -> their state dict, loadable by their ``TSN``.

    The classifier becomes ``module.new_fc`` (``model.dropout`` > 0, as their TSN builds it) or
    ``module.base_model.fc1`` (dropout 0). Refuses what their code cannot express.
    """
    t = mcfg.transform
    if mcfg.arch not in _ARCHS.values():
        raise AuthorsFormatError(f"model.arch={mcfg.arch}: the authors' code builds the plain bottleneck ResNets "
                                 f"{' and '.join(_ARCHS.values())} only")
    if t.type not in ("rsa", "conv2d"):
        raise AuthorsFormatError(f"model.transform.type={t.type}: the authors' code has no such transform")
    slots = transform_slots(mcfg, replaces(t.type))
    if any(not name.endswith(".conv2") for name in slots):
        raise AuthorsFormatError(f"model.transform.replace={t.replace}: the authors' code places RSA in the 3x3 "
                                 "conv (conv2) of a block only")
    blocks = [name.rsplit(".", 1)[0] for name in slots]
    if t.type == "rsa":
        o = t.rsa
        if o.norm != "l2":
            raise AuthorsFormatError(f"model.transform.rsa.norm={o.norm}: the authors' RSA always uses the L2 norm")
        if not o.decompose:
            raise AuthorsFormatError("model.transform.rsa.decompose=false: the authors' RSA always factors "
                                     "H = H1 H2^T")
        if any(name.endswith(".0") for name in blocks):
            raise AuthorsFormatError(f"model.transform.positions={t.positions}: the authors' code never places "
                                     "RSA in block 0 of a stage")
        if any(k % 2 == 0 for k in o.kernel_size):
            raise AuthorsFormatError(f"model.transform.rsa.kernel_size={o.kernel_size}: the authors' layer pads "
                                     "k//2 on both sides, which only works for odd sizes")
    body = {k: v for k, v in state.items() if not k.startswith("fc.")}
    layers = {}  # "layerS.B.conv2." -> their tensors of that RSA layer
    for block in blocks:
        prefix = f"{block}.conv2."
        ours = {k[len(prefix):]: v for k, v in body.items() if k.startswith(prefix)}
        theirs = rsa_to_authors(ours, t.rsa.kernel_size, f"{block}.conv2")
        layers[prefix] = {k: theirs[k] for k in _RSA_KEYS if k in theirs}  # in their module order
        cq = ours["value.weight"].shape[0]
        inv = torch.argsort(head_major_permutation(ours["query.weight"].shape[0] // cq, cq))
        for k in _BN_KEYS:
            body[f"{block}.bn2.{k}"] = body[f"{block}.bn2.{k}"][inv]
        body[f"{block}.conv3.weight"] = body[f"{block}.conv3.weight"][:, inv]
    out = {}
    for key, value in body.items():  # our module order, which is theirs
        layer = next((p for p in layers if key.startswith(p)), None)
        if layer is not None:
            out.update({AUTHORS_PREFIX + layer + k: v for k, v in layers.pop(layer).items()})
            continue
        if layer is None and any(key.startswith(p) for p in (f"{b}.conv2." for b in blocks)):
            continue  # the rest of an RSA layer already written
        if value.dim() == 4:  # Conv2d weight -> Conv3d with temporal size 1
            value = value.unsqueeze(2)
        out[AUTHORS_PREFIX + key] = value.clone()
    head = _NEW_FC if mcfg.dropout > 0 else AUTHORS_PREFIX + _FC1
    out[head + "weight"] = state["fc.weight"].unsqueeze(2).clone()  # Linear (K, C) -> Conv1d (K, C, 1)
    out[head + "bias"] = state["fc.bias"].clone()
    return out


def authors_checkpoint(state: dict, epoch: int = 0, best_prec1: float = 0.0) -> dict:
    """The dict their ``main.py`` saves and ``--resume`` reads: ``epoch``, ``arch``, ``state_dict``, ``best_prec1``."""
    return {"epoch": int(epoch), "arch": "ResNet", "state_dict": state, "best_prec1": float(best_prec1)}


# ------------------------------------------------------------------------------------------------
# Config keys.
# ------------------------------------------------------------------------------------------------
def _canonical(model: dict) -> dict:
    """Shape-relevant model keys of a config-style dict, normalized so that equal networks compare equal:
    ``{config key: comparable value}`` (term lists in canonical order; D and G per RSA layer)."""
    t = model["transform"]
    out = {f"model.{k}": model[k] for k in ("arch", "width", "num_classes")}
    # where the layers are, as the slot names both placement keys come down to (layerS.B.convK)
    names = sorted(t.get("replace") or [f"layer{s + 1}.{b}.conv2" for s, p in enumerate(t.get("positions", []))
                                        for b in p])
    if not replaces(t["type"]) or not names:
        out["model.transform.type"] = "conv2d"  # no transform anywhere: a plain TSN
        return out
    out["model.transform.type"] = t["type"]
    out["model.transform.positions"] = names
    if t["type"] != "rsa":
        return out
    o, key = t["rsa"], "model.transform.rsa."
    out[key + "kernel_size"] = list(o["kernel_size"])
    out[key + "queries"] = o["queries"]
    for k in ("kernel", "context"):
        out[key + k] = [x for x in ("basic", "relational") if x in o[k]]
    out[key + "norm"] = o["norm"]
    out[key + "l2_eps"] = o.get("l2_eps", 0.0)
    stages = [int(name.split(".")[0][5:]) - 1 for name in names]
    cqs = [model["width"] * 2 ** s // o["queries"] for s in stages]  # C_Q per layer
    if not o.get("decompose", True):
        out[key + "decompose"] = False
    else:
        out[key + "latent_dim"] = [o["latent_dim"] or cq // o.get("latent_divisor", 1) for cq in cqs]
    out[key + "groups"] = [o["groups"] or cq for cq in cqs]
    return out


def _raw(model: dict, key: str) -> Any:
    node = model
    for part in key.split(".")[1:]:
        node = node[part]
    return node


def model_mismatches(source: dict, mcfg: ModelConfig) -> list[tuple[str, Any, Any]]:
    """``[(config key, value in mcfg, value the checkpoint needs)]`` for every shape-relevant model key in
    which ``mcfg`` differs from ``source`` (model keys inferred from a checkpoint, or a stored config's
    ``model`` section)."""
    from rsanet.config import config_to_dict, upgrade_config_dict

    have = config_to_dict(mcfg)
    source = upgrade_config_dict({"model": source})["model"]  # a stored config of an older layout
    a, b = _canonical(have), _canonical(source)
    out = [(key, _raw(have, key), _raw(source, key)) for key in b if a.get(key) != b[key]]
    out = [m for m in out if m[1] != m[2]] or out  # e.g. type "rsa" with no positions reads as conv2d
    if have["transform"]["replace"] and any(key == "model.transform.positions" for key, _, _ in out):
        out.append(("model.transform.replace", have["transform"]["replace"], []))  # positions are read again
    return out


def yaml_flow(value: Any) -> str:
    """A value as the shell-safe YAML flow text of an ``--opts`` override: [5,7,7], [basic,relational]."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(yaml_flow(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):  # YAML 1.1 reads 1e-06 as a string: write 1.0e-06
        mantissa, e, exponent = repr(value).partition("e")
        return (mantissa if "." in mantissa or "n" in mantissa else mantissa + ".0") + e + exponent
    return str(value)


def format_overrides(mismatches: list[tuple[str, Any, Any]]) -> str:
    """``--opts`` text that makes a config fit: ``model.num_classes=48 model.transform.rsa.kernel_size=[5,7,7]``."""
    return " ".join(f"{key}={yaml_flow(want)}" for key, _, want in mismatches)


def describe(model: Optional[dict]) -> str:
    """One line about inferred model keys: ``resnet50, 174 classes, RSA L=8 D=C_Q 5x7x7 in [[2],[1,3],...]``."""
    if not model:
        return "unknown model"
    t = model["transform"]
    text = f"{model['arch']} (width {model['width']}), {model['num_classes']} classes"
    if t["type"] != "rsa":
        return text + ", no transform (TSN)"
    o = t["rsa"]
    d = "C_Q" if o["latent_dim"] == 0 else o["latent_dim"]
    return (text + f", RSA at {yaml_flow(t['positions'])}: L={o['queries']}, D={d}, "
            f"window {'x'.join(map(str, o['kernel_size']))}, kernel {yaml_flow(o['kernel'])}, "
            f"context {yaml_flow(o['context'])}")
