#!/usr/bin/env python
"""Train a model from a YAML config, single-process or as one rank of a torchrun job.

Same as the command ``rsanet-train``; the code and its usage (``--help``) are in rsanet/cli/train.py.
"""
import sys

from rsanet.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
