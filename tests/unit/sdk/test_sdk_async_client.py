"""The asyncio client against a scripted coordinator: same semantics as the blocking one."""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest
from polyspec import AsyncClient, DeadlineExceededError, InvalidArgumentError, UnavailableError

from tests.unit.sdk.scripted_coordinator import Reply, ScriptedServer, sample_response, sample_stream


class SleepLog:
    def __init__(self) -> None:
        self.sleeps: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def unavailable() -> Reply:
    return Reply(code=grpc.StatusCode.UNAVAILABLE, message="not ready")


async def test_generate_retries_unavailable_then_returns(scripted: ScriptedServer) -> None:
    scripted.script(unavailable(), Reply(response=sample_response()))
    sleep = SleepLog()
    async with AsyncClient(scripted.address, rng=random.Random(3), sleep=sleep) as client:
        result = await client.generate(fim=("def f(", "):\n    pass"), seed=9)
    assert result.text == "hello world" and result.finish_reason == "stop"
    assert sleep.sleeps == [random.Random(3).uniform(0, 0.1)]
    request = scripted.seen[1].request
    assert (request.fim.prefix, request.fim.suffix, request.seed) == ("def f(", "):\n    pass", 9)


async def test_errors_are_typed_and_not_retried(scripted: ScriptedServer) -> None:
    scripted.script(Reply(code=grpc.StatusCode.INVALID_ARGUMENT, message="top_p: must lie in (0, 1]"))
    sleep = SleepLog()
    async with AsyncClient(scripted.address, sleep=sleep) as client:
        with pytest.raises(InvalidArgumentError) as info:
            await client.generate("x", top_p=2.0)
    assert info.value.message == "top_p: must lie in (0, 1]" and sleep.sleeps == []
    assert len(scripted.seen) == 1


async def test_retries_are_bounded(scripted: ScriptedServer) -> None:
    scripted.script(*[unavailable() for _ in range(3)])
    sleep = SleepLog()
    async with AsyncClient(scripted.address, max_retries=1, sleep=sleep) as client:
        with pytest.raises(UnavailableError):
            await client.generate("x")
    assert len(scripted.seen) == 2 and len(sleep.sleeps) == 1


async def test_deadline(scripted: ScriptedServer) -> None:
    scripted.script(Reply(block=True))
    async with AsyncClient(scripted.address, timeout=0.3) as client:
        with pytest.raises(DeadlineExceededError):
            await client.generate("x")
    remaining = scripted.seen[0].time_remaining
    assert remaining is not None and remaining <= 0.31  # the wire rounds timeouts up a little


async def test_stream_assembles_and_retries_only_before_the_first_message(scripted: ScriptedServer) -> None:
    scripted.script(unavailable(), Reply(stream=sample_stream()))
    sleep = SleepLog()
    async with AsyncClient(scripted.address, sleep=sleep) as client:
        stream = client.generate_stream("p")
        deltas = [delta async for delta in stream]
        assert deltas == ["def", " f", "(x)"]
        assert stream.result.text == "def f(x)" and stream.result.finish_reason == "length"
        assert len(sleep.sleeps) == 1

        scripted.script(Reply(stream=sample_stream()[:2], code=grpc.StatusCode.UNAVAILABLE, message="x"))
        with pytest.raises(UnavailableError):
            await client.generate_stream("p").collect()
    assert len(scripted.seen) == 3 and len(sleep.sleeps) == 1


async def test_leaving_a_stream_early_cancels_the_call(scripted: ScriptedServer) -> None:
    scripted.script(Reply(stream=sample_stream()[:1], block=True))
    async with AsyncClient(scripted.address) as client:
        async with client.generate_stream("p") as stream:
            async for delta in stream:
                assert delta == "def"
                break
        # Cancelled by leaving the stream's block, while the channel stays open.
        assert await asyncio.to_thread(scripted.seen[0].ended.wait, 10)
