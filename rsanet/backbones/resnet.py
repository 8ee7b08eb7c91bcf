"""The torchvision ResNet family as TSN backbones: ResNet-18/34/50/101/152, ResNeXt and Wide ResNet.

torchvision builds the network (its ``ResNet`` class, blocks and layer factory), so module names, shapes and
ImageNet weights are torchvision's and its state dicts load one to one; ResNeXt and Wide ResNet are the same
blocks with torchvision's ``groups`` and ``width_per_group``. ``model.width`` narrows the network for tiny
test models: it is the stem's channel count, and stage s gets width * 2**s planes (torchvision: 64 * 2**s).

The blocks run through :func:`run_block` rather than their own forward, which adds what a video model needs
and a frame model does not: the clip length T for a transform in any of a block's convs (``layer1.2.conv2``,
run on clips by :func:`rsanet.backbones.common.run_slot`) and per-clip stochastic depth on the residual
branch (``drop_path``, attached to every block). For a block without them the numbers are torchvision's.

torchvision is imported when a network is built, not with this module: the config reads the table (names,
stage depths) without loading it.
"""
from __future__ import annotations

import re
from typing import Optional

import torch
from torch import nn

from rsanet.backbones.common import StochasticDepth, run_slot, survival_probabilities

__all__ = ["ResNet", "run_block"]

_SLOT = re.compile(r"^layer\d+\.\d+\.conv\d$")  # a conv of a residual block: conv1, conv2 (3x3), conv3


class ResNet:
    """A torchvision ResNet by its recipe: ``blocks`` per stage, ``bottleneck`` (else basic) blocks, ``groups``
    and ``width_per_group`` (ResNeXt 32x4d: 32 and 4; Wide ResNet-50-2: 1 and 128) and the name of its
    torchvision ImageNet weights (``model.pretrained: torchvision``)."""

    def __init__(self, blocks: list[int], bottleneck: bool, weights: str, groups: int = 1,
                 width_per_group: int = 64) -> None:
        self.DEPTHS = list(blocks)  # blocks per stage: model.transform.positions [[...] per stage]
        self.bottleneck = bottleneck
        self.WEIGHTS = weights  # torchvision weights enum member, e.g. ResNet50_Weights.IMAGENET1K_V1
        self.groups, self.width_per_group = groups, width_per_group

    def __repr__(self) -> str:
        kind = "bottleneck" if self.bottleneck else "basic"
        return f"ResNet({kind} blocks {self.DEPTHS}, groups={self.groups}, width_per_group={self.width_per_group})"

    # The positions shorthand: stage s (0-based), block b -> its 3x3 conv.
    @staticmethod
    def slot(stage: int, block: int) -> str:
        return f"layer{stage + 1}.{block}.conv2"

    @staticmethod
    def slots(net: nn.Module) -> list[str]:
        """Every conv of a residual block can hold a transform (not the stem, not a downsample)."""
        return [name for name, _ in net.named_modules() if _SLOT.match(name)]

    def check(self, mcfg) -> Optional[str]:
        """A width at which every grouped 3x3 conv keeps at least one channel per group."""
        if self.bottleneck and int(mcfg.width * self.width_per_group / 64) < 1:
            return (f"`model.width` {mcfg.width} leaves no channel per group in {mcfg.arch}'s first stage "
                    f"(width x {self.width_per_group} / 64 < 1); use at least {-(-64 // self.width_per_group)}")
        return None

    def build(self, mcfg) -> nn.Module:
        """The network with torchvision's module tree and no classifier (``num_features`` says its width)."""
        from torchvision.models import resnet as tv

        block = tv.Bottleneck if self.bottleneck else tv.BasicBlock
        # torchvision's ResNet with the attributes its layer factory reads, set up as its __init__ does but at
        # model.width (its __init__ fixes 64 channels, and draws an init that is redrawn anyway)
        net = tv.ResNet.__new__(tv.ResNet)
        nn.Module.__init__(net)
        w = mcfg.width
        net._norm_layer, net.inplanes, net.dilation = nn.BatchNorm2d, w, 1
        net.groups, net.base_width = self.groups, self.width_per_group
        net.conv1 = nn.Conv2d(3, w, kernel_size=7, stride=2, padding=3, bias=False)
        net.bn1 = nn.BatchNorm2d(w)
        net.relu = nn.ReLU(inplace=True)
        net.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for s, depth in enumerate(self.DEPTHS):  # torchvision's own layer factory, at w * 2**s planes
            setattr(net, f"layer{s + 1}", net._make_layer(block, w * 2 ** s, depth, stride=1 if s == 0 else 2))
        net.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        net.num_features = net.inplanes
        blocks = [b for s in range(len(self.DEPTHS)) for b in getattr(net, f"layer{s + 1}")]
        for b, survival in zip(blocks, survival_probabilities(len(blocks), mcfg.stochastic_depth)):
            b.drop_path = StochasticDepth(survival)
        return net

    def features(self, net: nn.Module, x: torch.Tensor, t: int) -> torch.Tensor:
        """Frames ``(B*T, 3, H, W)`` -> pooled per-frame features ``(B*T, C)``."""
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        for s in range(len(self.DEPTHS)):
            for block in getattr(net, f"layer{s + 1}"):
                x = run_block(net, block, x, t)
        return torch.flatten(net.avgpool(x), 1)  # (B*T, C, 1, 1) -> (B*T, C)

    @staticmethod
    def residual_bns(net: nn.Module) -> list[nn.BatchNorm2d]:
        """The last BN of every residual branch (bn3 of a bottleneck, bn2 of a basic block)."""
        return [(m.bn3 if hasattr(m, "bn3") else m.bn2) for m in net.modules() if hasattr(m, "drop_path")]


def run_block(net: nn.Module, block: nn.Module, x: torch.Tensor, t: int) -> torch.Tensor:
    """A torchvision BasicBlock or Bottleneck on frames ``(B*T, C, H, W)`` of clips of ``t`` frames:
    ``relu(shortcut(x) + drop_path(branch(x)))``, each conv of the branch through :func:`run_slot`."""
    shortcut = x if block.downsample is None else block.downsample(x)
    out = block.relu(block.bn1(run_slot(net, block.conv1, x, t)))
    if hasattr(block, "conv3"):  # bottleneck: 1x1 -> 3x3 (the stride, v1.5) -> 1x1
        out = block.relu(block.bn2(run_slot(net, block.conv2, out, t)))
        out = block.bn3(run_slot(net, block.conv3, out, t))
    else:  # basic: 3x3 (the stride) -> 3x3
        out = block.bn2(run_slot(net, block.conv2, out, t))
    return block.relu(shortcut + block.drop_path(out, t))
