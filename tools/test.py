#!/usr/bin/env python
"""Multi-view test of a checkpoint: test.clips x test.crops views per video, softmax averaged per video.

Same as the command ``rsanet-test``; the code and its usage (``--help``) are in rsanet/cli/test.py.
"""
import sys

from rsanet.cli.test import main

if __name__ == "__main__":
    sys.exit(main())
