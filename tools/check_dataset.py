#!/usr/bin/env python
"""Decode every video of a dataset split through the real pipeline and list what is unreadable.

Same as the command ``rsanet-check-dataset``; the code and its usage (``--help``) are in rsanet/cli/check_dataset.py.
"""
import sys

from rsanet.cli.check_dataset import main

if __name__ == "__main__":
    sys.exit(main())
