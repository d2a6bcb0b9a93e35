"""The one thread that runs torch work: requests are served first in, first out, within a queue limit."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from core.cancel import CancelSignal
from core.errors import ResourceExhaustedError

T = TypeVar("T")


class ModelWorker:
    """Runs callables one at a time on a dedicated thread.

    At most ``max_queue`` calls wait or run at once; one more raises ``ResourceExhaustedError``. A call
    whose awaiting task is cancelled before it starts is skipped; one already running has its ``cancel``
    signal set, so a callable that checks it stops early (the model engine does, between forwards).
    """

    def __init__(self, max_queue: int, thread_name: str = "polyspec-model") -> None:
        if max_queue < 1:
            raise ValueError("max_queue must be >= 1")
        self._max_queue = max_queue
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=thread_name)
        self._lock = threading.Lock()
        self._pending = 0

    @property
    def depth(self) -> int:
        """Calls waiting or running."""
        return self._pending

    async def run(self, fn: Callable[[], T], cancel: CancelSignal | None = None) -> T:
        """Queues ``fn`` behind the calls already submitted and returns its result."""
        with self._lock:
            if self._pending >= self._max_queue:
                raise ResourceExhaustedError(
                    f"the model server's queue is full ({self._max_queue} requests); retry later or elsewhere"
                )
            self._pending += 1
        try:
            future: Future[T] = self._executor.submit(fn)
        except BaseException:
            self._finished(None)
            raise
        future.add_done_callback(self._finished)
        try:
            return await asyncio.wrap_future(future)  # cancelling this skips fn if it has not started
        except asyncio.CancelledError:
            if cancel is not None:
                cancel.cancel()
            raise

    def _finished(self, _: Future[T] | None) -> None:
        with self._lock:
            self._pending -= 1

    def shutdown(self) -> None:
        """Drops queued calls and waits for the running one."""
        self._executor.shutdown(wait=True, cancel_futures=True)
