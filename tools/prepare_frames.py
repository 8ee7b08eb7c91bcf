#!/usr/bin/env python
"""Extract JPEG frames from every video under a folder with ffmpeg (the fast path for SS-V2 and others).

Same as the command ``rsanet-prepare-frames``; the code and its usage (``--help``) are in rsanet/cli/prepare_frames.py.
"""
import sys

from rsanet.cli.prepare_frames import main

if __name__ == "__main__":
    sys.exit(main())
