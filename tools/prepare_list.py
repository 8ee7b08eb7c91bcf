#!/usr/bin/env python
"""Write a TSN list file (``<path> <num_frames> <label>``) for one split of a configured dataset.

Same as the command ``rsanet-prepare-list``; the code and its usage (``--help``) are in rsanet/cli/prepare_list.py.
"""
import sys

from rsanet.cli.prepare_list import main

if __name__ == "__main__":
    sys.exit(main())
