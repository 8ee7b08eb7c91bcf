"""The 2D backbones by name: ``BACKBONES[model.arch]`` knows how to build one and run it on frames.

A new backbone is one module (or object) plus one line in :data:`BACKBONES`; the config takes the allowed values
of ``model.arch`` from this table (with a did-you-mean for a typo). An entry has these members
(:class:`rsanet.backbones.resnet.ResNet` is the torchvision ResNet family):

``DEPTHS``
    blocks per stage, for the shorthand ``model.transform.positions`` ([] when the backbone has none: name the
    convs with ``model.transform.replace`` instead).
``slot(stage, block) -> str``
    the module name that position (stage, block), both 0-based, stands for (ResNet: ``layer1.2.conv2``).
``slots(net) -> list[str]``
    the module names of ``net`` that may hold a transform (each a ``nn.Conv2d`` that :func:`features` runs
    through :func:`rsanet.backbones.common.run_slot`).
``WEIGHTS``
    the torchvision weights of ``model.pretrained: torchvision`` (``"ResNet50_Weights.IMAGENET1K_V1"``), or None.
``build(mcfg) -> nn.Module``
    the frame network for the ``model`` config section: torchvision's module names, no classifier, and an
    attribute ``num_features`` (the width of its pooled features).
``features(net, frames, t) -> (B*T, C)``
    pooled per-frame features of ``frames`` ``(B*T, 3, H, W)``, clips of ``t`` frames. ``net`` is the video
    model, which holds the network's modules under the same names.
``residual_bns(net) -> list[nn.BatchNorm2d]``
    the BatchNorms whose gamma starts at zero (the last of every residual branch; [] for none).
``check(mcfg) -> str | None`` (optional)
    what in the ``model`` section the backbone cannot honour, naming the key; run when the config is loaded.

Entries import torchvision (and whatever else builds them) inside ``build``, so that the config can read this
table without loading them.
"""
from __future__ import annotations

from rsanet.backbones.resnet import ResNet

# model.arch -> the backbone. torchvision's ImageNet weights: IMAGENET1K_V1 throughout (the ResNet-50 weights
# the authors' code loaded, and the standard release of the others).
BACKBONES = {
    "resnet18": ResNet([2, 2, 2, 2], bottleneck=False, weights="ResNet18_Weights.IMAGENET1K_V1"),
    "resnet34": ResNet([3, 4, 6, 3], bottleneck=False, weights="ResNet34_Weights.IMAGENET1K_V1"),
    "resnet50": ResNet([3, 4, 6, 3], bottleneck=True, weights="ResNet50_Weights.IMAGENET1K_V1"),
    "resnet101": ResNet([3, 4, 23, 3], bottleneck=True, weights="ResNet101_Weights.IMAGENET1K_V1"),
    "resnet152": ResNet([3, 8, 36, 3], bottleneck=True, weights="ResNet152_Weights.IMAGENET1K_V1"),
    "resnext50_32x4d": ResNet([3, 4, 6, 3], bottleneck=True, groups=32, width_per_group=4,
                              weights="ResNeXt50_32X4D_Weights.IMAGENET1K_V1"),
    "resnext101_32x8d": ResNet([3, 4, 23, 3], bottleneck=True, groups=32, width_per_group=8,
                               weights="ResNeXt101_32X8D_Weights.IMAGENET1K_V1"),
    "wide_resnet50_2": ResNet([3, 4, 6, 3], bottleneck=True, width_per_group=128,
                              weights="Wide_ResNet50_2_Weights.IMAGENET1K_V1"),
    "wide_resnet101_2": ResNet([3, 4, 23, 3], bottleneck=True, width_per_group=128,
                               weights="Wide_ResNet101_2_Weights.IMAGENET1K_V1"),
}

__all__ = ["BACKBONES", "backbone", "transform_slots"]


def backbone(name: str):
    """The backbone ``name``; a ValueError lists the known names (the config checked them already)."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown model.arch {name!r}; expected one of {', '.join(BACKBONES)}") from None


def transform_slots(mcfg, replaces: bool = True) -> list[str]:
    """The module names that get ``mcfg.transform``: ``model.transform.replace`` when it lists any, else the
    ``positions`` shorthand of the backbone; none when the transform ``replaces`` nothing (``conv2d``)."""
    t = mcfg.transform
    if not replaces:
        return []
    if t.replace:
        return list(t.replace)
    entry = backbone(mcfg.arch)
    return [entry.slot(s, b) for s, blocks in enumerate(t.positions) for b in sorted(blocks)]
