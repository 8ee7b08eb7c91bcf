"""Old location of :mod:`rsanet.testing.media` (the test-media writers), kept only for
``rsanet/benchmark/data.py`` until the benchmarks are unified; import ``rsanet.testing.media`` instead."""
from rsanet.testing.media import (frame_index_of, gray_level, index_frames, textured_frames,  # noqa: F401
                                  write_frame_folder, write_video)
