"""Admission control: a cap on concurrent generations and a bounded FIFO queue in front of it.

``AdmissionGate.slot`` is entered by Generate and GenerateStream before any work (parsing, tokenizing,
model calls). A free slot admits at once; when every slot is busy the request waits in the queue, in
arrival order, until a slot frees or its deadline passes (``DeadlineExceededError``); when the queue is
full too, ``ResourceExhaustedError`` at once, with a retry hint. The slot is released when the block
exits, however it exits (cancellation included); a request cancelled while queued leaves the queue and
frees nothing it did not take.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from core.errors import DeadlineExceededError, ErrorReason, ResourceExhaustedError

# The retry hint of a refusal: a client should wait about this long before trying again.
RETRY_AFTER_SECONDS = 1.0


class AdmissionRefusedError(ResourceExhaustedError):
    """Every slot and every queue place is taken; retry after ``retry_after_seconds``."""

    error_reason = ErrorReason.COORDINATOR_AT_CAPACITY

    def __init__(self, running: int, queued: int, retry_after_seconds: float) -> None:
        super().__init__(
            f"coordinator at capacity: {running} requests running and {queued} waiting "
            f"(--max-concurrent-requests, --max-queued-requests); retry after {retry_after_seconds:g} s "
            "or send to another coordinator replica",
            retry_after_seconds=retry_after_seconds,
        )


class AdmissionGate:
    """At most ``max_running`` holders at once; at most ``max_queued`` waiting for a slot, FIFO."""

    def __init__(
        self, max_running: int, max_queued: int, *, retry_after_seconds: float = RETRY_AFTER_SECONDS
    ) -> None:
        if max_running < 1 or max_queued < 0:
            raise ValueError(f"max_running must be >= 1 and max_queued >= 0, got {max_running}, {max_queued}")
        self.max_running = max_running
        self.max_queued = max_queued
        self.retry_after_seconds = retry_after_seconds
        self._running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def running(self) -> int:
        return self._running

    @property
    def queued(self) -> int:
        return len(self._waiters)

    @asynccontextmanager
    async def slot(self, timeout: float | None = None) -> AsyncIterator[None]:
        """Holds one slot for the block; waits at most ``timeout`` seconds (None: no bound) for it."""
        await self.acquire(timeout)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, timeout: float | None = None) -> None:
        """Takes a slot, waiting in the queue if need be; raises when refused or when ``timeout`` passes."""
        if self._running < self.max_running and not self._waiters:
            self._running += 1
            return
        if len(self._waiters) >= self.max_queued:
            raise AdmissionRefusedError(self._running, len(self._waiters), self.retry_after_seconds)
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except BaseException as exc:
            self._leave_queue(waiter)
            if isinstance(exc, TimeoutError):
                raise DeadlineExceededError(
                    f"deadline reached after waiting {timeout:g} s for a free slot "
                    f"({self.max_running} requests running)"
                ) from None
            raise

    def release(self) -> None:
        """Frees a slot: hands it to the first waiter, if any (the running count then stays the same)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to the waiter: running is unchanged
                return
        self._running -= 1

    def _leave_queue(self, waiter: asyncio.Future[None]) -> None:
        """A waiter that gives up: out of the queue; a slot already handed to it goes to the next one."""
        if waiter.done() and not waiter.cancelled():
            self.release()  # the slot was handed over just as the wait ended
        else:
            waiter.cancel()
            with suppress(ValueError):
                self._waiters.remove(waiter)
