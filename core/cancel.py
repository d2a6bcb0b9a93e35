"""Cancellation of a model-service call while it computes (engine side, thread-safe, no asyncio).

A ``CancelSignal`` is handed to the engine with each Draft/Score call. The server sets it when the caller
goes away (a cancelled or timed-out gRPC call); the engine checks it before each forward and waits out an
emulated-latency pad on it, so a call whose answer nobody reads stops within one forward: a pre-empted
verification or draft frees its worker for the next call at once. ``CallCancelledError`` is how the
engine stops; it carries the work done up to there.
"""

from __future__ import annotations

import threading

from core.modelcalls import ForwardStats


class CallCancelledError(Exception):
    """The call's caller is gone: the engine stopped between forwards (or cut a pad short)."""

    def __init__(self, stats: ForwardStats) -> None:
        super().__init__(f"call cancelled after {stats.forwards} forwards")
        self.stats = stats


class CancelSignal:
    """Set once, from any thread, when a call's result is no longer wanted."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def wait(self, seconds: float) -> bool:
        """Sleeps up to ``seconds``, returning early (True) once cancelled: an interruptible pad."""
        return self._event.wait(seconds)
