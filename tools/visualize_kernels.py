#!/usr/bin/env python
"""Draw the dynamic kernels of a trained model's RSA (or self-attention) layer for one video (paper Fig. 3).

Same as the command ``rsanet-visualize-kernels``; the code and its
usage (``--help``) are in rsanet/cli/visualize_kernels.py.
"""
import sys

from rsanet.cli.visualize_kernels import main

if __name__ == "__main__":
    sys.exit(main())
