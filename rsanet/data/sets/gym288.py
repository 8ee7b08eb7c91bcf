"""FineGym Gym288: the same clips and file formats as Gym99 (``gym99.py``), with the 288 element classes of
``gym288_categories.txt`` and the ``gym288_*_element*.txt`` lists."""
from __future__ import annotations

from rsanet.data.sets.common import check, decoder, has_split, open_video, resolve  # noqa: F401  (protocol)
from rsanet.data.sets.gym99 import (  # noqa: F401  (protocol)
    DROP_MISSING,
    VIDEO_EXT,
    class_names,
    read_classes,
    read_records,
    records,
)


def defaults(data) -> tuple[int, str]:
    return 288, "video"  # 288 element classes; sub-action clips cut from the YouTube videos
