#!/usr/bin/env python
"""Top-5 class predictions of a trained model for video files and frame folders.

Same as the command ``rsanet-predict``; the code and its usage (``--help``) are in rsanet/cli/predict.py.
"""
import sys

from rsanet.cli.predict import main

if __name__ == "__main__":
    sys.exit(main())
