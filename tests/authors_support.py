"""Helpers of the authors'-format tests (tests/test_official_*.py); this module holds no tests itself.

The fixtures in ``tests/fixtures/authors`` were made by running the authors' code (KimManjin/RSA) in a
scratch environment (see ``tests/fixtures/authors/README.md``). What the tests need to rebuild on our side
is here, written from the recipe that the fixture files state:

* :func:`uniform` — the deterministic number stream: ``numpy.random.PCG64(seed).random_raw`` (a bit stream
  numpy keeps stable across versions), each 64-bit draw turned into a double in [0, 1) by its top 53 bits.
* :func:`recipe_state` — the full authors' model's weights from its key/shape manifest and the recipe.
* :func:`recipe_clip` — the fixed input clip.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "authors"


def uniform(generator: np.random.PCG64, count: int) -> np.ndarray:
    """``count`` doubles in [0, 1): the top 53 bits of each raw 64-bit draw, times 2**-53."""
    raw = generator.random_raw(count)  # uint64
    return (raw >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def _is_bn(key: str) -> bool:
    module = key.rsplit(".", 1)[0]
    return module.rsplit(".", 1)[-1].startswith("bn") or module.endswith("downsample.1")


def recipe_values(key: str, shape: list[int], u: np.ndarray) -> np.ndarray:
    """The values of tensor ``key`` (flattened, row-major) from its uniforms ``u`` (see the fixture README)."""
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "running_mean" or (leaf == "bias" and (_is_bn(key) or key.endswith("fc.bias"))):
        return 0.2 * (2 * u - 1)
    if leaf == "running_var" or (leaf == "weight" and _is_bn(key)):
        return 0.5 + u
    if leaf == "I":  # (1, C_Q, C_Q): identity plus a perturbation
        return np.eye(shape[1]).reshape(-1) + 0.1 * (2 * u - 1)
    fan_in = shape[1] if leaf == "P1" else math.prod(shape[1:])
    return math.sqrt(3.0 / fan_in) * (2 * u - 1)  # uniform with variance 1 / fan_in


def recipe_state(manifest: list, seed: int, dtype=torch.float32) -> dict[str, torch.Tensor]:
    """The authors'-format state dict of ``manifest`` (``[[key, shape], ...]`` in their state-dict order):
    one uniform per element in manifest order; ``num_batches_tracked`` is 0 and draws nothing."""
    gen = np.random.PCG64(seed)
    state = {}
    for key, shape in manifest:
        if key.endswith("num_batches_tracked"):
            state[key] = torch.zeros(shape, dtype=torch.int64)
            continue
        values = recipe_values(key, shape, uniform(gen, math.prod(shape)))
        state[key] = torch.from_numpy(values.reshape(shape)).to(dtype)
    return state


def recipe_clip(seed: int, shape: list[int], dtype=torch.float32) -> torch.Tensor:
    """The fixed input clip (B, 3, T, H, W): uniform in [-2, 2), row-major from the stream of ``seed``."""
    values = 4.0 * uniform(np.random.PCG64(seed), math.prod(shape)) - 2.0
    return torch.from_numpy(values.reshape(shape)).to(dtype)


def load_json(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


def relative_error(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """max |ours - theirs| / max |theirs| (the error every fixture test reports)."""
    ours, theirs = torch.as_tensor(ours).double(), torch.as_tensor(theirs).double()
    return float((ours - theirs).abs().max() / theirs.abs().max())
