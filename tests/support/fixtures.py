"""Fixtures shared by test packages (a conftest imports the ones it uses)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def single_torch_thread() -> Iterator[None]:
    """Runs each test with one intra-op thread: the toy tensors are small, and thread wake-ups dominate."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
