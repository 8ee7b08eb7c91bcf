"""Video models: TSN over a 2D backbone of :data:`rsanet.backbones.BACKBONES`, with spatio-temporal transforms,
and their ImageNet initialisation.

``build_model(cfg)`` returns a :class:`TSN` mapping ``(B, 3, T, H, W)`` clips to ``(B, num_classes)`` logits, the
average of the per-frame logits over the T segments (TSN consensus, :class:`AverageConsensus`).
"""
from rsanet.models.pretrained import PretrainedMismatchError, PretrainedReport, load_pretrained, read_state_dict
from rsanet.models.tsn import TSN, AverageConsensus, build_model

__all__ = ["PretrainedMismatchError", "PretrainedReport", "load_pretrained", "read_state_dict", "TSN",
           "AverageConsensus", "build_model"]
