"""TSN: a 2D backbone of :data:`rsanet.backbones.BACKBONES` run on frames, spatio-temporal transforms placed
in its convs by module name, and the TSN head.

A clip ``(B, 3, T, H, W)`` is folded into ``B*T`` frames for the backbone's 2D layers; the convs named by
``model.transform.replace`` (or the ``positions`` shorthand) hold a transform of :data:`rsanet.ops.TRANSFORMS`,
which sees ``(B, C, T, H, W)`` (the way TSM patches a stock torchvision network). The head pools each frame,
applies dropout and the linear classifier, and the consensus averages the per-frame logits over the T
segments (TSN average consensus, before any softmax). The backbone's modules sit at the top level under
their torchvision names (``conv1``, ``layer1.0.conv2``, ..., ``fc``), so torchvision state dicts load one to one.
"""
from __future__ import annotations

import torch
from torch import nn

from rsanet.backbones import backbone, transform_slots
from rsanet.models.pretrained import load_pretrained
from rsanet.ops import build_transform, replaces, transform_module

__all__ = ["TSN", "AverageConsensus", "build_model", "init_weights"]


class AverageConsensus(nn.Module):
    """TSN's segmental consensus: per-frame logits ``(B*T, K)`` -> their mean over the T frames ``(B, K)``."""

    def forward(self, frame_logits: torch.Tensor, t: int) -> torch.Tensor:
        # (B*T, K) -> (B, T, K) -> mean over the segments -> (B, K)
        return frame_logits.reshape(-1, t, frame_logits.shape[-1]).mean(dim=1)


class TSN(nn.Module):
    """TSN over the backbone ``model.arch``; ``forward((B, 3, T, H, W)) -> (B, num_classes)``.

    ``replaced`` lists the module names of the convs that hold a transform (``["layer3.1.conv2", ...]``);
    ``pretrained_report`` is set when ImageNet weights were loaded by :func:`build_model`.
    """

    def __init__(self, mcfg) -> None:
        super().__init__()
        entry = backbone(mcfg.arch)
        # Whatever the backbone's library draws while building is not kept: every layer is drawn again below,
        # in module order, so a seed gives the same network whichever library built it (and as before).
        with torch.random.fork_rng(devices=[]):
            net = entry.build(mcfg)
        for name, child in net.named_children():
            self.add_module(name, child)
        self.arch = mcfg.arch
        self.checkpoint_transforms = mcfg.checkpoint_rsa  # read by rsanet.backbones.common.run_slot
        self._features = entry.features
        self.replaced = _place_transforms(self, mcfg, entry)
        self.dropout = nn.Dropout(mcfg.dropout)
        self.fc = nn.Linear(net.num_features, mcfg.num_classes)
        self.consensus = AverageConsensus()
        self.pretrained_report = None
        init_weights(self, mcfg, entry.residual_bns(self))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` clip -> ``(B*T, C_out)`` pooled per-frame features."""
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"expected a clip batch of shape (B, 3, T, H, W), got {tuple(x.shape)}")
        b, c, t, h, w = x.shape
        stem = next(p for p in self.parameters() if p.dim() == 4)
        if stem.is_contiguous(memory_format=torch.channels_last):  # a channels-last network
            # (B, C, T, H, W) -> (B, T, H, W, C) -> (B*T, H, W, C) -> (B*T, C, H, W) channels-last: one copy
            x = x.permute(0, 2, 3, 4, 1).reshape(b * t, h, w, c).permute(0, 3, 1, 2)
        else:
            # (B, C, T, H, W) -> (B, T, C, H, W) -> (B*T, C, H, W)
            x = x.transpose(1, 2).reshape(b * t, c, h, w)
        return self._features(self, x, t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frame_logits = self.fc(self.dropout(self.features(x)))  # (B*T, K)
        return self.consensus(frame_logits, x.shape[2])


def _place_transforms(model: TSN, mcfg, entry) -> list[str]:
    """Put ``model.transform`` into the slots it names and draw every layer's initial weights in module order;
    returns the slot names in module order. A block's transforms are built before its other layers are drawn,
    which keeps networks bit-identical to those of earlier versions for a given seed."""
    t = mcfg.transform
    wanted = transform_slots(mcfg, replaces(t.type))
    allowed = set(entry.slots(model))
    bad = [name for name in wanted if name not in allowed]
    if bad:
        shown = ", ".join(sorted(allowed)[:6]) + (", ..." if len(allowed) > 6 else "")
        key = "model.transform.replace" if t.replace else "model.transform.positions"
        raise ValueError(f"{key}: {bad[0]!r} is not a conv of {mcfg.arch} that can hold a transform; those are "
                         f"{shown} ({len(allowed)} in all)")
    by_parent: dict[str, list[str]] = {}
    wanted_set = set(wanted)
    for name in wanted:
        by_parent.setdefault(name.rpartition(".")[0], []).append(name)
    placed = []
    for name, module in list(model.named_modules()):
        for slot in sorted(by_parent.get(name, []), key=wanted.index):
            conv = model.get_submodule(slot)
            if conv.stride[0] != conv.stride[1]:
                raise ValueError(f"model.transform: {slot} has stride {conv.stride}; a transform takes one stride")
            model.set_submodule(slot, build_transform(t, conv.in_channels, conv.out_channels, conv.stride[0]))
            placed.append(slot)
        if name not in wanted_set and hasattr(module, "reset_parameters"):  # not a conv a transform replaced
            module.reset_parameters()
    order = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return sorted(placed, key=order.__getitem__)


def init_weights(model: TSN, mcfg, residual_bns: list[nn.BatchNorm2d]) -> None:
    """MSRA init (fan_out) of the backbone's convs, BN (1, 0), zero gamma on ``residual_bns`` (the last BN of
    every residual branch), the classifier by ``model.classifier_init`` (``xavier_uniform`` with zero bias, the
    authors' code, or ``normal``, N(0, 0.001) with zero bias, TSN's choice), then each transform by its own
    ``init_weights`` (RSA: ``model.transform.rsa.init``); transforms keep their own init otherwise."""
    inside_transform = {id(m) for name in model.replaced for m in model.get_submodule(name).modules()}
    for m in model.modules():
        if id(m) in inside_transform:
            continue
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for bn in residual_bns:
        nn.init.zeros_(bn.weight)
    if mcfg.classifier_init == "xavier_uniform":
        nn.init.xavier_uniform_(model.fc.weight)
    elif mcfg.classifier_init == "normal":
        nn.init.normal_(model.fc.weight, 0.0, 0.001)
    else:
        raise ValueError(f"model.classifier_init must be 'xavier_uniform' or 'normal', got {mcfg.classifier_init!r}")
    nn.init.zeros_(model.fc.bias)
    t = mcfg.transform
    transform_init = getattr(transform_module(t.type), "init_weights", None)
    for name in model.replaced if transform_init is not None else []:
        transform_init(getattr(t, t.type), model.get_submodule(name))


def build_model(cfg) -> TSN:
    """The network of ``cfg.model`` (accepts a whole :class:`rsanet.config.Config` or its ``ModelConfig``).

    When ``model.pretrained`` is set, the ImageNet checkpoint is loaded (see
    :func:`rsanet.models.pretrained.load_pretrained`) and its report is kept in ``model.pretrained_report``.
    """
    mcfg = getattr(cfg, "model", cfg)
    model = TSN(mcfg)
    if mcfg.pretrained:
        model.pretrained_report = load_pretrained(model, mcfg.pretrained, mcfg.transform_block_init)
    return model
