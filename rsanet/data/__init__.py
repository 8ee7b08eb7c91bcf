"""Input pipeline: dataset table -> records -> sampler -> decoder -> transforms -> dataset.

``build_dataset(cfg, split)`` is the entry point; the pieces are importable for tools and tests.
Dataset items hold uint8 clips (C, T, H, W); ``normalize_clip`` turns them into the model's float input with
ImageNet statistics, on the device (see DESIGN.md, "Samples"). The datasets themselves, one module each, are
the table :data:`rsanet.data.sets.DATASETS`.

The names below are imported on first use (PEP 562), so that the config can read the dataset table
(``rsanet.data.sets``) without loading the pipeline (torch, torchvision, the transforms).
"""
import importlib

# public name -> the module that defines it
_EXPORTS = {
    "Decoder": "rsanet.data.records", "VideoRecord": "rsanet.data.records", "VIDEO_EXTS": "rsanet.data.records",
    "build_dataset": "rsanet.data.datasets", "build_records": "rsanet.data.datasets",
    "build_transform": "rsanet.data.datasets", "VideoDataset": "rsanet.data.datasets",
    "check_bad_fraction": "rsanet.data.datasets", "BadDataError": "rsanet.data.datasets",
    "DecodeTimeout": "rsanet.data.datasets", "Decoded": "rsanet.data.decoders",
    "FrameFolderDecoder": "rsanet.data.decoders", "VideoFileDecoder": "rsanet.data.decoders",
    "build_decoder": "rsanet.data.decoders", "decode_clip": "rsanet.data.decoders",
    "AnnotationError": "rsanet.data.labels", "left_right_pairs": "rsanet.data.labels",
    "read_class_list": "rsanet.data.labels", "swap_left_right": "rsanet.data.labels",
    "ClipSampler": "rsanet.data.sampling", "segment_indices": "rsanet.data.sampling",
    "dense_indices": "rsanet.data.sampling", "FlipPolicy": "rsanet.data.transforms",
    "TrainTransform": "rsanet.data.transforms", "TestTransform": "rsanet.data.transforms",
    "normalize_clip": "rsanet.data.transforms", "DATASETS": "rsanet.data.sets",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rsanet.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups find it directly
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
