"""Admission control: a cap on concurrent generations and a bounded wait queue, before any work.

The gate on its own: FIFO hand-over, refusal when the queue is full, a deadline reached while queued,
cancellation while queued (it frees nothing it did not take, even when a slot was just handed to it). Over
loopback, by Generate and by GenerateStream: 4x the cap (running + queued) at once gives RESOURCE_EXHAUSTED
(with a RetryInfo) to exactly the excess, before any admitted request finishes; every admitted request
completes with the reference output; every cache is released and the gate is empty afterwards. A refusal
lacks the acceptance marker (the request never ran, so a client may re-send it); the SDK waits the hint and
gets in once a slot is free. A queued request whose deadline passes leaves the queue.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeAlias

import grpc
import pytest
from polyspec import AsyncClient
from polyspec.v1 import coordinator_pb2, coordinator_pb2_grpc

from coordinator.admission import AdmissionGate, AdmissionRefusedError
from coordinator.server import CoordinatorServer
from core.errors import DeadlineExceededError, ErrorReason
from core.serving.interceptor import ACCEPTED_METADATA
from core.serving.status import error_reason, retry_delay_seconds
from tests.support.toy_lm import word_lm
from tests.support.toy_service import ToyServer
from tests.unit.coordinator.conftest import coordinator_settings

StartToy = Callable[..., Awaitable[ToyServer]]
StartCoord = Callable[..., Awaitable[CoordinatorServer]]
Stub: TypeAlias = "coordinator_pb2_grpc.CoordinatorServiceAsyncStub"  # type-check-only class
Stubs = Callable[[int], Stub]


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_the_gate_hands_slots_over_in_arrival_order() -> None:
    gate = AdmissionGate(1, 3)
    await gate.acquire()
    order: list[int] = []

    async def waiter(index: int) -> None:
        await gate.acquire()
        order.append(index)
        gate.release()

    tasks = []
    for index in range(3):
        tasks.append(asyncio.create_task(waiter(index)))
        await _settle()
    assert (gate.running, gate.queued) == (1, 3)
    with pytest.raises(AdmissionRefusedError) as refused:
        await gate.acquire()
    assert refused.value.retry_after_seconds == gate.retry_after_seconds
    assert "retry after" in refused.value.message
    gate.release()
    await asyncio.gather(*tasks)
    assert order == [0, 1, 2]
    assert (gate.running, gate.queued) == (0, 0)


async def test_a_gate_without_a_queue_refuses_at_once() -> None:
    gate = AdmissionGate(1, 0)
    async with gate.slot():
        with pytest.raises(AdmissionRefusedError):
            await gate.acquire()
    assert (gate.running, gate.queued) == (0, 0)


async def test_a_deadline_reached_while_queued_leaves_the_queue() -> None:
    gate = AdmissionGate(1, 1)
    await gate.acquire()
    with pytest.raises(DeadlineExceededError):
        await gate.acquire(timeout=0.02)
    assert (gate.running, gate.queued) == (1, 0)
    gate.release()
    assert gate.running == 0


async def test_cancelled_while_queued_frees_nothing_it_did_not_take() -> None:
    gate = AdmissionGate(1, 2)
    await gate.acquire()
    queued = asyncio.create_task(gate.acquire())
    await _settle()
    queued.cancel()
    await asyncio.gather(queued, return_exceptions=True)
    assert (gate.running, gate.queued) == (1, 0)
    gate.release()
    assert (gate.running, gate.queued) == (0, 0)


async def test_a_slot_handed_to_a_cancelled_waiter_passes_to_the_next() -> None:
    gate = AdmissionGate(1, 2)
    await gate.acquire()
    first = asyncio.create_task(gate.acquire())
    await _settle()
    second = asyncio.create_task(gate.acquire())
    await _settle()
    gate.release()  # handed to ``first`` ...
    first.cancel()  # ... which is cancelled before it runs
    await asyncio.gather(first, return_exceptions=True)
    await asyncio.wait_for(second, 1.0)
    assert (gate.running, gate.queued) == (1, 0)
    gate.release()
    assert gate.running == 0


def _request() -> coordinator_pb2.GenerateRequest:
    """A sampled request whose seed reproduces its output (static lookahead: the same draws every time)."""
    lookahead = coordinator_pb2.Lookahead(policy=coordinator_pb2.LOOKAHEAD_POLICY_STATIC, k=3)
    return coordinator_pb2.GenerateRequest(
        prompt="alpha beta", max_new_tokens=6, ignore_eos=True, seed=3, lookahead=lookahead
    )


async def _call(
    stub: Stub, timeout: float, stream: bool = False
) -> tuple[float, coordinator_pb2.GenerateResponse | grpc.aio.AioRpcError]:
    """Seconds to the answer, and the answer (a stream's messages gathered into one response)."""
    start = time.monotonic()
    try:
        if stream:
            answer: coordinator_pb2.GenerateResponse | grpc.aio.AioRpcError = await _streamed(stub, timeout)
        else:
            answer = await stub.Generate(_request(), timeout=timeout)
    except grpc.aio.AioRpcError as error:
        answer = error
    return time.monotonic() - start, answer


async def _streamed(stub: Stub, timeout: float) -> coordinator_pb2.GenerateResponse:
    gathered = coordinator_pb2.GenerateResponse()
    async for message in stub.GenerateStream(
        coordinator_pb2.GenerateStreamRequest(request=_request()), timeout=timeout
    ):
        gathered.token_ids.extend(message.token_ids)
        gathered.text += message.text_delta
    return gathered


async def _until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("stream", [False, True], ids=["Generate", "GenerateStream"])
async def test_four_times_the_cap_refuses_exactly_the_excess(
    start_toy: StartToy, start_coord: StartCoord, channels: Stubs, stream: bool
) -> None:
    """2 running + 2 queued, 16 clients at once: 12 refused at once, 4 complete, every cache released."""
    target = await start_toy()
    drafter = await start_toy(word_lm(11))
    server = await start_coord(
        coordinator_settings(
            target.address, drafter.address, max_concurrent_requests=2, max_queued_requests=2
        )
    )
    stub = channels(server.port)
    reference = await stub.Generate(_request(), timeout=30)
    target.state.delay_seconds = drafter.state.delay_seconds = 0.05

    results = await asyncio.gather(*(_call(stub, 30, stream) for _ in range(16)))

    refused = [(t, a) for t, a in results if isinstance(a, grpc.aio.AioRpcError)]
    admitted = [(t, a) for t, a in results if not isinstance(a, grpc.aio.AioRpcError)]
    assert len(refused) == 12 and len(admitted) == 4
    for _, error in refused:
        assert isinstance(error, grpc.aio.AioRpcError)
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
        assert error_reason(error) is ErrorReason.COORDINATOR_AT_CAPACITY
        assert retry_delay_seconds(error) == pytest.approx(1.0)
        assert "retry after" in (error.details() or "")
        metadata = (*(error.initial_metadata() or ()), *(error.trailing_metadata() or ()))
        assert ACCEPTED_METADATA not in metadata  # refused before admission: the SDK may re-send it
    assert max(t for t, _ in refused) < min(t for t, _ in admitted)
    for _, answer in admitted:
        assert isinstance(answer, coordinator_pb2.GenerateResponse)
        assert list(answer.token_ids) == list(reference.token_ids)
        assert answer.text == reference.text

    gate = server.services.admission
    assert (gate.running, gate.queued) == (0, 0)
    await _until(lambda: not target.state.held and not drafter.state.held)
    assert len(set(target.state.released)) >= 5  # the reference and the four admitted requests
    registry = server.services.metrics.registry
    assert registry.get_sample_value("polyspec_admission_refusals_total") == 12
    assert registry.get_sample_value("polyspec_admission_running_requests") == 0
    assert registry.get_sample_value("polyspec_admission_queued_requests") == 0


async def test_a_queued_request_past_its_deadline_leaves_the_queue(
    start_toy: StartToy, start_coord: StartCoord, channels: Stubs
) -> None:
    target = await start_toy()
    server = await start_coord(
        coordinator_settings(target.address, max_concurrent_requests=1, max_queued_requests=1)
    )
    stub = channels(server.port)
    target.state.delay_seconds = 0.1
    gate = server.services.admission
    running = asyncio.create_task(_call(stub, 30))
    await _until(lambda: gate.running == 1)
    _, late = await _call(stub, 0.2)
    assert isinstance(late, grpc.aio.AioRpcError)
    assert late.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await _until(lambda: gate.queued == 0)
    assert gate.running == 1 and not running.done()
    _, answer = await running
    assert isinstance(answer, coordinator_pb2.GenerateResponse)
    await _until(lambda: gate.running == 0 and not target.state.held)


async def test_the_sdk_waits_the_refusals_hint_and_gets_in(
    start_toy: StartToy, start_coord: StartCoord, channels: Stubs
) -> None:
    """A client of a full coordinator is refused with a hint, waits it and is admitted on its own."""
    target = await start_toy()
    server = await start_coord(
        coordinator_settings(target.address, max_concurrent_requests=1, max_queued_requests=0)
    )
    target.state.delay_seconds = 0.05
    gate = server.services.admission
    running = asyncio.create_task(_call(channels(server.port), 30))
    await _until(lambda: gate.running == 1)
    async with AsyncClient(f"127.0.0.1:{server.port}", timeout=30, rng=random.Random(2)) as client:
        result = await client.generate("alpha beta", max_new_tokens=6, ignore_eos=True, seed=3, lookahead=3)
    _, first = await running
    assert isinstance(first, coordinator_pb2.GenerateResponse)
    assert list(result.token_ids) == list(first.token_ids)
    registry = server.services.metrics.registry
    assert (registry.get_sample_value("polyspec_admission_refusals_total") or 0) >= 1
