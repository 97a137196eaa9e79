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


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """The tiny model's weights (trained with one thread: the same bits everywhere) in a file, for
    the batch runner's tests (they load it as a user's checkpoint)."""
    import torch
    from tiny import train_tiny

    torch.set_num_threads(1)
    path = tmp_path_factory.mktemp("tiny") / "tiny.pt"
    torch.save(train_tiny().state_dict(), path)
    return path
