#!/usr/bin/env python
"""The demo: TSN vs RSANet on the built-in synthetic motion benchmark, with the real tools end to end.

Same as the command ``rsanet-demo``; the code and its usage (``--help``) are in rsanet/cli/demo.py.
"""
import sys

from rsanet.cli.demo import main

if __name__ == "__main__":
    sys.exit(main())
