"""Fixtures of the DSI tests: one torch thread (the toy tensors are tiny; thread wake-ups dominate)."""

from __future__ import annotations

from tests.support.fixtures import single_torch_thread

__all__ = ["single_torch_thread"]
