#!/usr/bin/env python
"""Cut FineGym element clips from the raw YouTube videos, in two stages (event, then sub-action).

Same as the command ``rsanet-prepare-finegym``; the code and its
usage (``--help``) are in rsanet/cli/prepare_finegym.py.
"""
import sys

from rsanet.cli.prepare_finegym import main

if __name__ == "__main__":
    sys.exit(main())
