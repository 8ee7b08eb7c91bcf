#!/usr/bin/env python
"""Parameters and FLOPs (multiply-accumulates, the paper's convention) of a model for one clip.

Same as the command ``rsanet-flops``; the code and its usage (``--help``) are in rsanet/cli/flops.py.
"""
import sys

from rsanet.cli.flops import main

if __name__ == "__main__":
    sys.exit(main())
