#!/usr/bin/env python
"""Export a trained model to TorchScript, a torch.export program or ONNX, and check it against eager.

Same as the command ``rsanet-export``; the code and its usage (``--help``) are in rsanet/cli/export.py.
"""
import sys

from rsanet.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
