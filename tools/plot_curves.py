#!/usr/bin/env python
"""Training curves of a run as a PNG: loss, learning rate and validation top-1 / top-5 over epochs.

Same as the command ``rsanet-plot-curves``; the code and its usage (``--help``) are in rsanet/cli/plot_curves.py.
"""
import sys

from rsanet.cli.plot_curves import main

if __name__ == "__main__":
    sys.exit(main())
