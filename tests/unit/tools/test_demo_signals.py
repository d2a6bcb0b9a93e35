"""Signals that arrive while the demo spawns a service are held until the child is registered."""

from __future__ import annotations

import signal
from types import FrameType

from tools.demo import _signals_deferred


def test_signals_are_held_during_the_block_and_delivered_after_it() -> None:
    received: list[int] = []

    def record(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    previous = signal.signal(signal.SIGTERM, record)
    try:
        with _signals_deferred():
            signal.raise_signal(signal.SIGTERM)
            signal.raise_signal(signal.SIGTERM)
            assert received == []  # held: the child would be registered here
        assert received == [signal.SIGTERM]  # delivered once to the handler in place before
        assert signal.getsignal(signal.SIGTERM) is record
    finally:
        signal.signal(signal.SIGTERM, previous)
