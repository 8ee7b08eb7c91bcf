#!/usr/bin/env python
"""List files for your own videos, sorted into one folder per class.

Same as the command ``rsanet-make-list``; the code and its usage (``--help``) are in rsanet/cli/make_list.py.
"""
import sys

from rsanet.cli.make_list import main

if __name__ == "__main__":
    sys.exit(main())
