"""The replica pool under hung, failing, busy and restarted replicas (toy services over real gRPC)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from coordinator.callcost import TimeoutRule
from coordinator.clients import CallScope, Deadline, ModelServiceClient, Traffic
from coordinator.replicas import ReplicaPolicy, ReplicaPool
from core.errors import DeadlineExceededError, ResourceExhaustedError, UnavailableError
from core.modelcalls import ContextRef, ScoreCall, ScoreOutcome
from core.sampling import SamplingConfig
from core.serving.server import GrpcServerSettings
from tests.support.toy_lm import word_lm
from tests.support.toy_service import ToyModel, ToyServer, start_toy_server, toy_info
from tests.support.toy_tokenizers import BOS

StartToy = Callable[..., Awaitable[ToyServer]]
GREEDY = SamplingConfig(temperature=0.0)
FLOOR = 0.3  # the toy services report no compute time: every measured call gets the floor


def policy(**overrides: Any) -> ReplicaPolicy:
    fields: dict[str, Any] = {
        "timeouts": TimeoutRule(factor=4.0, floor=FLOOR, cap=5.0),
        "ejection_seconds": 0.2,
        "probe_interval_seconds": 0.1,
        "probe_timeout_seconds": 0.3,
        "retry_seconds": 5.0,
    }
    return ReplicaPolicy(**(fields | overrides))


def make_pool(role: str, addresses: list[str], **overrides: Any) -> ReplicaPool:
    return ReplicaPool(role, addresses, lambda a: ModelServiceClient(a, role), policy=policy(**overrides))


async def score(
    pool: ReplicaPool, prefer: str | None = None, seconds: float = 30.0
) -> tuple[ScoreOutcome, str]:
    scope = CallScope(Deadline(seconds), Traffic(), timeout_cap=5.0)
    call = ScoreCall(ContextRef.whole("s", [BOS, 9, 10]), (11,), None, GREEDY, seed=1)
    outcome, used = await pool.call(
        lambda client, timeout: client.score(call, scope.with_timeout(timeout)),
        prefer=prefer,
        deadline=scope.deadline,
    )
    pool.costs.observe(outcome.stats)
    return outcome, used


async def until(condition: Callable[[], bool], limit: float = 10.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_a_hung_replica_costs_one_timeout_then_is_ejected_and_probed_back(start_toy: StartToy) -> None:
    hung, healthy = await start_toy(), await start_toy()
    pool = make_pool("target", [hung.address, healthy.address], eject_after_failures=1)
    try:
        expected, _ = await score(pool, prefer=healthy.address)  # measures the cost: timeouts = the floor
        hung.state.hung = True
        started = time.monotonic()
        outcome, used = await score(pool, prefer=hung.address)
        elapsed = time.monotonic() - started
        assert used == healthy.address and outcome.target_samples == expected.target_samples
        assert elapsed < 3 * FLOOR + 1.0  # one timeout and the re-sent call, not the 5 s cap
        replica = pool.replica(hung.address)
        assert replica.ejected
        for _ in range(3):  # an ejected replica gets no calls, even when preferred
            assert (await score(pool, prefer=hung.address))[1] == healthy.address
        hung.state.hung = False
        await until(lambda: not replica.ejected)  # the probe lets it back
        assert (await score(pool, prefer=hung.address))[1] == hung.address
    finally:
        await pool.close()


async def test_the_drafter_breaker_opens_on_timeouts_and_closes_on_a_probe(start_toy: StartToy) -> None:
    drafter = await start_toy()
    pool = make_pool("drafter", [drafter.address], persistent=False)
    try:
        await score(pool)
        assert pool.usable()
        drafter.state.hung = True
        for _ in range(2):  # eject_after_failures=2: two timeouts open the breaker
            started = time.monotonic()
            with pytest.raises(DeadlineExceededError, match="did not answer in time"):
                await score(pool)
            assert time.monotonic() - started < FLOOR + 1.0
        assert not pool.usable()
        started = time.monotonic()
        with pytest.raises(UnavailableError, match="no usable replica"):
            await score(pool)  # refused at once: no call goes to an ejected drafter
        assert time.monotonic() - started < 0.1
        drafter.state.hung = False
        await until(pool.usable)
        await score(pool)
    finally:
        await pool.close()


async def test_calls_wait_for_capacity_instead_of_overflowing_a_queue(start_toy: StartToy) -> None:
    first, second = await start_toy(), await start_toy()
    for toy in (first, second):
        toy.state.delay_seconds = 0.05
    pool = make_pool("target", [first.address, second.address])
    for toy in (first, second):
        pool.mark_verified(toy.address, capacity=2)
    try:
        results = await asyncio.gather(*(score(pool) for _ in range(12)))
        assert len({outcome.target_samples for outcome, _ in results}) == 1
        assert first.state.max_active <= 2 and second.state.max_active <= 2
        assert first.state.score_forwards + second.state.score_forwards == 12
    finally:
        await pool.close()


async def test_a_full_queue_is_retried_not_failed(start_toy: StartToy) -> None:
    only = await start_toy()
    only.state.fail_next.extend([ResourceExhaustedError("queue full")] * 3)
    pool = make_pool("target", [only.address])
    try:
        _, used = await score(pool)
        assert used == only.address and not only.state.fail_next
        assert not pool.replica(only.address).ejected  # busy is not broken
    finally:
        await pool.close()


async def test_a_persistent_pool_gives_up_at_the_deadline(start_toy: StartToy) -> None:
    only = await start_toy()
    only.state.fail_always = UnavailableError("down")
    pool = make_pool("target", [only.address], retry_seconds=60.0)
    try:
        started = time.monotonic()
        with pytest.raises(UnavailableError, match="down"):
            await score(pool, seconds=0.8)
        assert time.monotonic() - started < 2.0
    finally:
        await pool.close()


async def test_a_restarted_replica_is_used_again_within_seconds(toy_tokenizer: Any) -> None:
    lm = word_lm(3)
    model = ToyModel(lm, toy_info(lm, toy_tokenizer, model_name="toy"))
    server = await start_toy_server(model)
    port = server.running.port
    pool = make_pool("target", [server.address], retry_seconds=0.2)
    try:
        await score(pool)
        await server.stop()
        with pytest.raises(UnavailableError):
            await score(pool)
        await asyncio.sleep(3.0)  # down long enough for gRPC's default back-off to grow past seconds
        settings = GrpcServerSettings(port=port, shutdown_grace_seconds=0.0)
        server = await start_toy_server(model, settings)
        started = time.monotonic()
        await until(lambda: not pool.replica(server.address).ejected)
        pool.policy = policy(retry_seconds=10.0)
        await score(pool)
        assert time.monotonic() - started < 4.0
    finally:
        await pool.close()
        await server.stop()
