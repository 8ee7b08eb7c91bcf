"""Input pipeline: records -> sampler -> decoder -> transforms -> dataset."""
from rsanet.data.records import Decoder, VideoRecord

__all__ = ["Decoder", "VideoRecord"]
