"""Shared pytest setup: import rsanet first (it makes torchvision importable next to a CPU-only torch)
and keep every test on small, deterministic CPU settings."""

import pytest
import torch

import rsanet  # noqa: F401  (must come before any torchvision import)

torch.set_num_threads(1)  # tiny shapes: one thread avoids OpenMP spin-wait under load


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _one_thread():
    """Each test starts on one thread, and a test that changes it does not leak the change."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
