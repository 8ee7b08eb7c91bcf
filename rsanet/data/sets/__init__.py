"""The datasets by name: ``DATASETS[data.dataset]`` is the module that knows that dataset.

A new dataset is one module in this folder plus one line in :data:`DATASETS`. The config takes the allowed
values of ``data.dataset`` from this table (with a did-you-mean for a typo), and ``tools/prepare_labels.py``
its choices. Every module defines the same members (``ssv1.py`` is a short example to copy):

``VIDEO_EXT``
    video file extension used when ``data.video_ext`` is '' (the official release's; '' where the paths say it).
``DROP_MISSING``
    True: listed clips whose file is missing are dropped at start-up, with a warning, instead of counting
    as unreadable (FineGym: its YouTube sources disappear).
``read_classes(label_file) -> list[str]``
    the class names of the dataset's label file, in label order, or None when it has no label file
    (``tools/prepare_labels.py``).
``defaults(data) -> (num_classes, backend)``
    what ``model.num_classes: 0`` and ``data.backend: auto`` become when the config is loaded (``data`` is the
    ``DataConfig``); ``(0, "auto")`` leaves them to :func:`resolve`, which reads the files.
``check(data) -> str | None``
    what is wrong with the ``data.*`` keys this dataset reads (checked when the config is loaded), or None.
``resolve(cfg, splits) -> list[(level, message)]``
    settle, in place, what ``defaults`` left to the files (a list dataset's class count and backend), check
    the values the config sets against them, and return notes for the run's log.
``has_split(data, split) -> bool``
    whether the config gives the split any data (``data.val_annotations: null`` gives none).
``class_names(cfg) -> list[str]``
    the class names in label order, from the label map alone (no annotation file is read).
``records(cfg, split, classes) -> list[VideoRecord]``
    the entries of a split; a missing file fails here, naming its config key.
``decoder(cfg) -> Decoder``
    what reads the frames of a record (``rsanet.data.records.Decoder``).
``open_video(cfg, path) -> (decoder, record) | None``
    a single video named outside the annotation files (``synthetic://test/3``), for predict, visualize and
    export; None when ``path`` is a video file or frame folder, which every dataset reads the same way.

File-based datasets share most of these from :mod:`rsanet.data.sets.common`. The modules are declarations
and file-format readers: they import nothing from the pipeline (torch, transforms, the config), so the config
can read this table without loading the pipeline.
"""
from rsanet.data.sets import diving48, gym99, gym288, lists, ssv1, ssv2, synthetic

# data.dataset -> its module.
DATASETS = {
    "ssv1": ssv1,  # Something-Something V1, JPEG frames and CSVs
    "ssv2": ssv2,  # Something-Something V2, WebM videos and JSON
    "diving48": diving48,  # Diving-48 (V2 labels), MP4 videos and JSON
    "gym99": gym99,  # FineGym Gym99 elements, sub-action MP4 clips
    "gym288": gym288,  # FineGym Gym288 elements
    "list": lists,  # TSN / mmaction2 list files: your own videos
    "synthetic": synthetic,  # the built-in synthetic motion benchmark (generated, nothing on disk)
}

__all__ = ["DATASETS", "dataset_module"]


def dataset_module(name: str):
    """The module of dataset ``name``; a ValueError lists the known names (the config checked them already)."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown data.dataset {name!r}; expected one of {', '.join(DATASETS)}") from None
