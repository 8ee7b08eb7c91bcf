"""TSN-ResNet (18/34/50/101) whose spatial convs can be replaced by spatio-temporal transforms.

A clip ``(B, 3, T, H, W)`` is folded into ``B*T`` frames for the 2D layers (the stem, the 1x1 convs and the
3x3 convs that are not replaced). The blocks listed in ``model.transform.positions`` get a transform from
:func:`rsanet.ops.build_transform` as their ``conv2``, which sees ``(B, C, T, H, W)``. The head pools each
frame globally, applies dropout and the linear classifier, and averages the per-frame logits over the T
segments (TSN average consensus, before any softmax).
"""
from __future__ import annotations

import torch
from torch import nn

from rsanet.config import ModelConfig, TransformConfig
from rsanet.models.blocks import BasicBlock, Bottleneck
from rsanet.models.pretrained import load_pretrained
from rsanet.ops import RSA, build_transform

STAGE_DEPTHS = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
    "resnet101": (Bottleneck, [3, 4, 23, 3]),
}


def survival_probabilities(num_blocks: int, stochastic_depth: float) -> list[float]:
    """Linear decay over all blocks of the network: 1 for the first block, ``1 - stochastic_depth`` last."""
    if num_blocks == 1:
        return [1.0]
    return [1.0 - stochastic_depth * i / (num_blocks - 1) for i in range(num_blocks)]


class Stage(nn.Sequential):
    """One ResNet stage (``layer1`` .. ``layer4``). Passes the clip length to each block.

    ``checkpoint_rsa`` recomputes only the transforms (each block's ``conv2`` when it is one) in backward,
    never a whole block: BatchNorm statistics are updated once per step, as without checkpointing.
    """

    def __init__(self, *blocks: nn.Module, checkpoint_rsa: bool = False) -> None:
        super().__init__(*blocks)
        self.checkpoint_rsa = checkpoint_rsa
        for block in blocks:
            block.checkpoint_transform = checkpoint_rsa and block.temporal

    def forward(self, x: torch.Tensor, t: int) -> torch.Tensor:  # type: ignore[override]
        for block in self:
            x = block(x, t)
        return x


class TSNResNet(nn.Module):
    """TSN-ResNet with torchvision module names; ``forward((B, 3, T, H, W)) -> (B, num_classes)``.

    ``replaced`` lists the module names of the convs that hold a transform (``["layer3.1.conv2", ...]``);
    ``pretrained_report`` is set when ImageNet weights were loaded by :func:`build_model`.
    """

    def __init__(self, mcfg: ModelConfig) -> None:
        super().__init__()
        if mcfg.arch not in STAGE_DEPTHS:
            raise ValueError(f"model.arch must be one of {sorted(STAGE_DEPTHS)}, got {mcfg.arch!r}")
        block_cls, depths = STAGE_DEPTHS[mcfg.arch]
        w = mcfg.width  # stem channels; stage s has w * 2**s planes
        self.conv1 = nn.Conv2d(3, w, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)

        positions = _positions(mcfg.transform, depths)
        survival = survival_probabilities(sum(depths), mcfg.stochastic_depth)
        self.replaced: list[str] = []  # names of the convs that hold a transform, e.g. "layer3.1.conv2"
        in_ch = w
        for s, depth in enumerate(depths):
            first = sum(depths[:s])
            stage, in_ch = _make_stage(mcfg, block_cls, s, in_ch, positions[s], survival[first:first + depth])
            self.add_module(f"layer{s + 1}", stage)
            self.replaced += [f"layer{s + 1}.{b}.conv2" for b in sorted(positions[s])]
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(mcfg.dropout)
        self.fc = nn.Linear(in_ch, mcfg.num_classes)
        self.pretrained_report = None
        init_weights(self, mcfg.transform.rsa_init, mcfg.classifier_init)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, T, H, W)`` clip -> ``(B*T, C_out)`` pooled per-frame features."""
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"expected a clip batch of shape (B, 3, T, H, W), got {tuple(x.shape)}")
        b, c, t, h, w = x.shape
        if self.conv1.weight.is_contiguous(memory_format=torch.channels_last):  # a channels-last network
            # (B, C, T, H, W) -> (B, T, H, W, C) -> (B*T, H, W, C) -> (B*T, C, H, W) channels-last: one copy
            x = x.permute(0, 2, 3, 4, 1).reshape(b * t, h, w, c).permute(0, 3, 1, 2)
        else:
            # (B, C, T, H, W) -> (B, T, C, H, W) -> (B*T, C, H, W)
            x = x.transpose(1, 2).reshape(b * t, c, h, w)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x, t)
        return torch.flatten(self.avgpool(x), 1)  # (B*T, C_out, 1, 1) -> (B*T, C_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frame_logits = self.fc(self.dropout(self.features(x)))  # (B*T, K)
        # (B*T, K) -> (B, T, K) -> mean over the segments -> (B, K)
        return frame_logits.reshape(x.shape[0], x.shape[2], -1).mean(dim=1)


def _make_stage(mcfg: ModelConfig, block_cls: type, s: int, in_ch: int, positions: list[int],
                survival: list[float]) -> tuple[Stage, int]:
    """Stage ``s`` (0-based) with a transform as ``conv2`` in the blocks listed in ``positions``."""
    planes = mcfg.width * 2 ** s
    blocks = []
    for b, p in enumerate(survival):
        stride = 2 if (s > 0 and b == 0) else 1
        conv2 = None
        if b in positions:
            # v1.5 bottlenecks stride on conv2, so the transform takes the stride; basic blocks stride on conv1
            conv2 = build_transform(mcfg.transform, planes, planes, stride=stride if block_cls is Bottleneck else 1)
        blocks.append(block_cls(in_ch, planes, stride, conv2=conv2, survival=p))
        in_ch = planes * block_cls.expansion
    return Stage(*blocks, checkpoint_rsa=mcfg.checkpoint_rsa), in_ch


def _positions(transform: TransformConfig, depths: list[int]) -> list[list[int]]:
    """Block ids per stage that get a transform; conv2d keeps torchvision's own 3x3 conv everywhere."""
    if transform.type == "conv2d":
        return [[] for _ in depths]
    if len(transform.positions) != len(depths):
        raise ValueError(f"model.transform.positions needs {len(depths)} lists, got {transform.positions}")
    for s, (blocks, depth) in enumerate(zip(transform.positions, depths)):
        bad = [b for b in blocks if not 0 <= b < depth]
        if bad:
            raise ValueError(f"model.transform.positions: stage {s} has only blocks 0..{depth - 1}, got {bad}")
    return [list(p) for p in transform.positions]


def init_weights(model: TSNResNet, rsa_init: str = "authors", classifier_init: str = "xavier_uniform") -> None:
    """MSRA init (fan_out) of the backbone's convs, BN (1, 0), zero gamma on the last BN of every residual
    block, the RSA layers by ``rsa_init`` (:meth:`rsanet.ops.RSA.reset_parameters`; other transforms keep
    their own init), and the classifier by ``classifier_init``: ``xavier_uniform`` with zero bias (the
    authors' code) or ``normal``, N(0, 0.001) with zero bias (TSN's choice)."""
    inside_transform = {id(m) for name in model.replaced for m in model.get_submodule(name).modules()}
    for m in model.modules():
        if id(m) in inside_transform:
            continue
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in model.modules():
        if isinstance(m, (BasicBlock, Bottleneck)):
            nn.init.zeros_(m.last_bn.weight)
    if classifier_init == "xavier_uniform":
        nn.init.xavier_uniform_(model.fc.weight)
    elif classifier_init == "normal":
        nn.init.normal_(model.fc.weight, 0.0, 0.001)
    else:
        raise ValueError(f"model.classifier_init must be 'xavier_uniform' or 'normal', got {classifier_init!r}")
    nn.init.zeros_(model.fc.bias)
    if rsa_init != "variance_preserving":  # an RSA layer is built variance-preserving; re-drawing only when the
        for m in model.modules():  # scheme differs keeps models of that scheme bit-identical to earlier versions
            if isinstance(m, RSA):
                m.reset_parameters(rsa_init)


def build_model(cfg) -> TSNResNet:
    """The network of ``cfg.model`` (accepts a whole :class:`rsanet.config.Config` or its ``ModelConfig``).

    When ``model.pretrained`` is set, the torchvision ImageNet checkpoint is loaded (see
    :func:`rsanet.models.pretrained.load_pretrained`) and its report is kept in ``model.pretrained_report``.
    """
    mcfg: ModelConfig = getattr(cfg, "model", cfg)
    model = TSNResNet(mcfg)
    if mcfg.pretrained:
        model.pretrained_report = load_pretrained(model, mcfg.pretrained, mcfg.transform_block_init)
    return model
