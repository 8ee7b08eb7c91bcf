#!/usr/bin/env python
"""Write the class list (one name per line, line n = class n) that a dataset's parser reads from its official label
file, e.g. to commit the Gym288 map or to check a download against ``data/<dataset>/``.

Same as the command ``rsanet-prepare-labels``; the code and its usage (``--help``) are in rsanet/cli/prepare_labels.py.
"""
import sys

from rsanet.cli.prepare_labels import main

if __name__ == "__main__":
    sys.exit(main())
