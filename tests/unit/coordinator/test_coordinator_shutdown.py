"""A coordinator that shuts down releases the caches of the generations it cuts.

A long streamed generation (and a unary one) run on toy model services; the coordinator stops while they
are mid-generation. When ``stop`` returns, the clients got an error and neither model service holds a
cached sequence of theirs: the Release calls went out before the channels closed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeAlias

import grpc
import pytest
from polyspec.v1 import coordinator_pb2, coordinator_pb2_grpc

from coordinator.server import CoordinatorServer
from tests.support.toy_lm import word_lm
from tests.support.toy_service import ToyServer
from tests.unit.coordinator.conftest import coordinator_settings

StartToy = Callable[..., Awaitable[ToyServer]]
StartCoord = Callable[..., Awaitable[CoordinatorServer]]
Stub: TypeAlias = "coordinator_pb2_grpc.CoordinatorServiceAsyncStub"  # type-check-only class
Stubs = Callable[[int], Stub]


def _long_request() -> coordinator_pb2.GenerateRequest:
    lookahead = coordinator_pb2.Lookahead(policy=coordinator_pb2.LOOKAHEAD_POLICY_STATIC, k=3)
    return coordinator_pb2.GenerateRequest(
        prompt="alpha beta", max_new_tokens=400, ignore_eos=True, seed=5, lookahead=lookahead
    )


async def _until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def _stream(stub: Stub, received: list[int]) -> grpc.StatusCode:
    request = coordinator_pb2.GenerateStreamRequest(request=_long_request())
    try:
        async for message in stub.GenerateStream(request, timeout=60):
            received.extend(message.token_ids)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def _unary(stub: Stub) -> grpc.StatusCode:
    try:
        await stub.Generate(_long_request(), timeout=60)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


@pytest.mark.parametrize("grace", [0.0, 0.2])
async def test_a_shutdown_releases_the_caches_of_the_calls_it_cuts(
    start_toy: StartToy, start_coord: StartCoord, channels: Stubs, grace: float
) -> None:
    target = await start_toy()
    drafter = await start_toy(word_lm(11))
    server = await start_coord(coordinator_settings(target.address, drafter.address))
    stub = channels(server.port)
    target.state.delay_seconds = drafter.state.delay_seconds = 0.02
    received: list[int] = []
    stream = asyncio.create_task(_stream(stub, received))
    unary = asyncio.create_task(_unary(stub))
    await _until(lambda: len(received) >= 3 and len(target.state.held) == 2)
    assert len(drafter.state.held) == 2

    await server.stop(grace)

    assert target.state.held == {} and drafter.state.held == {}
    assert len(set(target.state.released)) == 2 and len(set(drafter.state.released)) == 2
    codes = await asyncio.wait_for(asyncio.gather(stream, unary), 10)
    assert grpc.StatusCode.OK not in codes
    assert len(received) < 400
