"""Fixtures of the SLRS tests."""

from __future__ import annotations

from tests.support.fixtures import single_torch_thread

__all__ = ["single_torch_thread"]
