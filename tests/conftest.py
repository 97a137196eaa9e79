"""Test-wide set-up: torch's OpenMP threads sleep instead of spinning while they wait (set
before any test module imports torch; see mlalp_core/__init__.py for why)."""

import os

import pytest  # does not load torch

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine threads spin."""
    import torch  # not at the top: the environment above must be set before torch loads

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
