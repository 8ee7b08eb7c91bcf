#!/usr/bin/env python
"""Convert checkpoints between the authors' release format (KimManjin/RSA ``.pth.tar``) and RSANet's.

Same as the command ``rsanet-convert-checkpoint``; the code and its
usage (``--help``) are in rsanet/cli/convert_checkpoint.py.
"""
import sys

from rsanet.cli.convert_checkpoint import main

if __name__ == "__main__":
    sys.exit(main())
