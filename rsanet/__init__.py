"""RSANet: Relational Self-Attention (NeurIPS 2021) for video understanding.

Data flows one way: config -> data -> models -> engine -> evaluation.
"""
from rsanet._compat import ensure_torchvision_importable as _ensure_tv

_ensure_tv()

__version__ = "0.1.0"
