"""The virtual-clock event loop of the DSI law tests: sleeps cost no wall time and keep their order."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.support.dsi_toys import run_virtual


def test_sleeps_jump_the_clock_in_deadline_order() -> None:
    finished: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await asyncio.sleep(seconds)
        finished.append((name, asyncio.get_running_loop().time()))

    async def main() -> float:
        start = asyncio.get_running_loop().time()
        await asyncio.gather(sleeper("hour", 3600.0), sleeper("day", 86400.0), sleeper("now", 0.0))
        return asyncio.get_running_loop().time() - start

    wall = time.perf_counter()
    elapsed = run_virtual(main())
    assert time.perf_counter() - wall < 5.0
    assert elapsed == pytest.approx(86400.0)
    assert [name for name, _ in finished] == ["now", "hour", "day"]
    assert finished[1][1] == pytest.approx(3600.0)


def test_timeouts_and_cancellation_follow_the_virtual_clock() -> None:
    async def main() -> bool:
        task = asyncio.ensure_future(asyncio.sleep(10.0))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.shield(task), timeout=5.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return asyncio.get_running_loop().time() == pytest.approx(5.0)

    assert run_virtual(main())


def test_a_loop_with_nothing_to_wait_for_says_so() -> None:
    async def main() -> None:
        await asyncio.get_running_loop().create_future()  # nothing will ever set it

    with pytest.raises(RuntimeError, match="virtual clock"):
        run_virtual(main())
