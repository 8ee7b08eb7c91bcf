"""Make ``import torchvision`` work next to a CPU-only PyTorch build.

The torchvision wheels on PyPI are CUDA builds. Next to a CPU-only torch their C++ extension cannot load
(it links libtorch_cuda), and torchvision then fails at import while registering fake kernels for its
``nms``/``qnms`` operators, although models, transforms and weights need no C++ operator at all. When (and
only when) the extension does not load, we declare the two operator schemas so that the import succeeds;
calling them still fails loudly inside torchvision. Nothing changes where torchvision's extension loads.

Why this runs from ``import rsanet`` and needs the package imported before torchvision: the failure happens
inside ``import torchvision`` itself, so only code that runs before that import can prevent it. Inside the
project that holds by construction: every entry point is a module of this package (``rsanet.cli.*``, which
``tools/*.py`` and the ``rsanet-*`` commands run), and importing any of them runs this package's
``__init__`` first. Making it hold for any program would take code that runs at every interpreter start (a
``.pth`` file installing an import hook for ``torchvision``), a global side effect on every Python process of
the environment for the sake of a mismatched pair of wheels; we do not install one. With matching wheels
(a CPU torchvision next to a CPU torch, or CUDA next to CUDA) the order does not matter at all.
"""
from __future__ import annotations

import glob
import importlib.util
import os
import sys

import torch

_SCHEMA_LIB = None  # keeps the torch.library.Library alive for the life of the process


def ensure_torchvision_importable() -> None:
    global _SCHEMA_LIB
    if "torchvision" in sys.modules or _SCHEMA_LIB is not None:
        return
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return
    for lib in glob.glob(os.path.join(os.path.dirname(spec.origin), "_C*.so")):
        try:
            torch.ops.load_library(lib)
            return
        except (OSError, RuntimeError):
            pass
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _SCHEMA_LIB = lib
