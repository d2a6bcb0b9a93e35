"""The model worker: one thread, first in first out, a queue limit, cancelled calls skipped."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable

import pytest

from core.errors import ResourceExhaustedError
from services.model.worker import ModelWorker


def blocker() -> tuple[threading.Event, threading.Event, Callable[[], str]]:
    """A call that signals when it starts and runs until released."""
    started, release = threading.Event(), threading.Event()

    def block() -> str:
        started.set()
        release.wait(timeout=10)
        return "blocked"

    return started, release, block


async def test_calls_run_one_at_a_time_in_submission_order() -> None:
    worker = ModelWorker(max_queue=10)
    started, release, block = blocker()
    order: list[int] = []
    threads: set[str] = set()

    def record(index: int) -> int:
        order.append(index)
        threads.add(threading.current_thread().name)
        return index

    first = asyncio.ensure_future(worker.run(block))
    await asyncio.to_thread(started.wait, 10)
    rest = [asyncio.ensure_future(worker.run(functools.partial(record, i))) for i in range(5)]
    await asyncio.sleep(0)
    assert worker.depth == 6
    release.set()
    assert await first == "blocked"
    assert await asyncio.gather(*rest) == [0, 1, 2, 3, 4]
    assert order == [0, 1, 2, 3, 4]
    assert len(threads) == 1
    assert worker.depth == 0
    worker.shutdown()


async def test_a_full_queue_is_resource_exhausted() -> None:
    worker = ModelWorker(max_queue=2)
    started, release, block = blocker()
    running = asyncio.ensure_future(worker.run(block))
    await asyncio.to_thread(started.wait, 10)
    queued = asyncio.ensure_future(worker.run(lambda: "queued"))
    await asyncio.sleep(0)
    with pytest.raises(ResourceExhaustedError, match="queue is full"):
        await worker.run(lambda: "one too many")
    release.set()
    assert list(await asyncio.gather(running, queued)) == ["blocked", "queued"]
    assert await worker.run(lambda: "room again") == "room again"
    worker.shutdown()


async def test_a_call_cancelled_while_queued_never_runs() -> None:
    worker = ModelWorker(max_queue=5)
    started, release, block = blocker()
    ran: list[str] = []
    running = asyncio.ensure_future(worker.run(block))
    await asyncio.to_thread(started.wait, 10)
    cancelled = asyncio.ensure_future(worker.run(lambda: ran.append("cancelled")))
    after = asyncio.ensure_future(worker.run(lambda: ran.append("after")))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    release.set()
    await asyncio.gather(running, after)
    assert ran == ["after"]
    assert worker.depth == 0
    worker.shutdown()


async def test_exceptions_reach_the_caller() -> None:
    worker = ModelWorker(max_queue=1)

    def fail() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await worker.run(fail)
    assert worker.depth == 0
    worker.shutdown()
