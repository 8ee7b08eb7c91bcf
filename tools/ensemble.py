#!/usr/bin/env python
"""Average the per-video scores of several models and print the metrics (Table 3's 8f+16f RSANet-R50EN).

Same as the command ``rsanet-ensemble``; the code and its usage (``--help``) are in rsanet/cli/ensemble.py.
"""
import sys

from rsanet.cli.ensemble import main

if __name__ == "__main__":
    sys.exit(main())
