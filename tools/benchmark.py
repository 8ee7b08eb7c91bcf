#!/usr/bin/env python
"""Benchmarks, one subcommand per level (layer, model, memory, profile, data, synthetic).

Same as the command ``rsanet-benchmark``; the code and its usage (``--help``) are in rsanet/cli/benchmark.py.
"""
import sys

from rsanet.cli.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
