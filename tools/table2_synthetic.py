#!/usr/bin/env python
"""Table 2 on the synthetic motion benchmark: every transform of configs/synthetic/, several seeds, mean ± std.

Same as the command ``rsanet-table2-synthetic``; the code and its
usage (``--help``) are in rsanet/cli/table2_synthetic.py.
"""
import sys

from rsanet.cli.table2_synthetic import main

if __name__ == "__main__":
    sys.exit(main())
