"""Input pipeline: records -> sampler -> decoder -> transforms -> dataset.

``build_dataset(cfg, split)`` is the entry point; the pieces are importable for tools and tests.
Dataset items hold uint8 clips (C, T, H, W); ``normalize_clip`` turns them into the model's float input with
ImageNet statistics, on the device (see DESIGN.md, "Samples").
"""
from rsanet.data.datasets import (BadDataError, DecodeTimeout, VideoDataset, build_dataset, build_records,
                                  build_transform, check_bad_fraction)
from rsanet.data.decoders import Decoded, FrameFolderDecoder, VideoFileDecoder, build_decoder, decode_clip
from rsanet.data.labels import AnnotationError, left_right_pairs, read_class_list, swap_left_right
from rsanet.data.parsers import read_annotations
from rsanet.data.records import Decoder, VideoRecord
from rsanet.data.sampling import ClipSampler, dense_indices, segment_indices
from rsanet.data.transforms import FlipPolicy, TestTransform, TrainTransform, normalize_clip

__all__ = [
    "Decoder", "VideoRecord", "build_dataset", "build_records", "build_transform", "VideoDataset",
    "check_bad_fraction", "BadDataError", "DecodeTimeout", "Decoded", "FrameFolderDecoder", "VideoFileDecoder",
    "build_decoder", "decode_clip", "AnnotationError", "left_right_pairs", "read_class_list", "swap_left_right",
    "read_annotations", "ClipSampler", "segment_indices", "dense_indices", "FlipPolicy", "TrainTransform",
    "TestTransform", "normalize_clip",
]
