"""TSN-ResNet backbones (18/34/50/101) with spatio-temporal transforms, and their ImageNet initialisation.

``build_model(cfg)`` returns a :class:`TSNResNet` mapping ``(B, 3, T, H, W)`` clips to ``(B, num_classes)``
logits, the average of the per-frame logits over the T segments (TSN consensus).
"""
from rsanet.models.blocks import BasicBlock, Bottleneck, StochasticDepth, fold_time, unfold_time
from rsanet.models.pretrained import PretrainedMismatchError, PretrainedReport, load_pretrained, read_state_dict
from rsanet.models.tsn_resnet import TSNResNet, build_model, survival_probabilities

__all__ = [
    "BasicBlock", "Bottleneck", "StochasticDepth", "fold_time", "unfold_time", "PretrainedMismatchError",
    "PretrainedReport", "load_pretrained", "read_state_dict", "TSNResNet", "build_model", "survival_probabilities",
]
