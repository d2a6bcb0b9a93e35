"""The model-service client (context deltas, context misses, error mapping, bytes) and the replica pool."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from coordinator.clients import CallScope, Deadline, ModelServiceClient, Traffic, common_prefix_len
from coordinator.replicas import ReplicaPolicy, ReplicaPool
from core.errors import (
    ContextMissError,
    DeadlineExceededError,
    ResourceExhaustedError,
    UnavailableError,
)
from core.modelcalls import ContextRef, DraftCall, ScoreCall
from core.sampling import SamplingConfig
from tests.support.toy_lm import word_lm
from tests.support.toy_service import ToyServer
from tests.support.toy_tokenizers import BOS, word_level_toy

GREEDY = SamplingConfig(temperature=0.0)
StartToy = Callable[..., Awaitable[ToyServer]]
MakeClient = Callable[..., ModelServiceClient]


def scope(seconds: float | None = 10.0) -> CallScope:
    return CallScope(Deadline(seconds), Traffic(), timeout_cap=10.0)


def score_call(sequence_id: str, context: list[int], candidates: list[int] | None = None) -> ScoreCall:
    return ScoreCall(ContextRef.whole(sequence_id, context), tuple(candidates or ()), None, GREEDY, seed=1)


@pytest.fixture
async def client_factory() -> AsyncIterator[MakeClient]:
    made: list[ModelServiceClient] = []

    def make(address: str, role: str = "target") -> ModelServiceClient:
        client = ModelServiceClient(address, role)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


def test_common_prefix_len() -> None:
    assert common_prefix_len([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix_len([1, 2], [1, 2, 3]) == 2
    assert common_prefix_len([], [1]) == 0


async def test_context_deltas_send_only_new_tokens(start_toy: StartToy, client_factory: MakeClient) -> None:
    toy = await start_toy()
    client = client_factory(toy.address)
    call_scope = scope()
    context = [BOS, 9, 10, 11]
    draft = DraftCall(ContextRef.whole("s", context), 3, GREEDY, seed=3)
    assert client.uncached_tokens("s", context) == 4  # nothing cached yet
    drafted = await client.draft(draft, call_scope)
    assert len(drafted.draft_tokens) == 3
    # The server holds context + drafts; one accepted draft and a correction follow.
    context = [*context, drafted.draft_tokens[0], 12]
    assert client.uncached_tokens("s", context) == 1
    await client.score(score_call("s", context, [13]), call_scope)
    assert client.uncached_tokens("s", [*context, 13, 14]) == 1
    await client.score(score_call("s", [*context, 13, 14]), call_scope)
    assert toy.state.calls == [("Draft", "s", 0, 4), ("Score", "s", 5, 1), ("Score", "s", 7, 1)]
    assert toy.state.contexts[-1] == [*context, 13, 14]
    assert call_scope.traffic.bytes_sent > 0 and call_scope.traffic.bytes_received > 0
    assert client.holds("s") and not client.holds("other")


async def test_context_miss_resends_the_whole_context(
    start_toy: StartToy, client_factory: MakeClient
) -> None:
    toy = await start_toy()
    client = client_factory(toy.address)
    context = [BOS, 9, 10]
    first = await client.score(score_call("s", context), scope())
    toy.state.held.clear()  # the server evicted the sequence
    second = await client.score(score_call("s", context), scope())
    assert first.target_samples == second.target_samples
    assert toy.state.calls == [("Score", "s", 0, 3), ("Score", "s", 2, 1), ("Score", "s", 0, 3)]


async def test_errors_name_the_service(start_toy: StartToy, client_factory: MakeClient) -> None:
    toy = await start_toy()
    client = client_factory(toy.address, "drafter")
    toy.state.fail_next.append(ResourceExhaustedError("queue full"))
    with pytest.raises(
        ResourceExhaustedError, match=f"^drafter at {toy.address} is over capacity: queue full"
    ):
        await client.score(score_call("s", [BOS]), scope())
    toy.state.fail_next.append(ContextMissError("gone"))  # a miss on a whole context is a protocol error
    with pytest.raises(RuntimeError, match="whole context"):
        await client.score(score_call("t", [BOS]), scope())
    await toy.stop()
    with pytest.raises(UnavailableError, match=f"^drafter at {toy.address} is unavailable"):
        await client.score(score_call("s", [BOS]), scope())


async def test_deadline_bounds_calls(start_toy: StartToy, client_factory: MakeClient) -> None:
    toy = await start_toy()
    client = client_factory(toy.address)
    toy.state.delay_seconds = 5.0
    with pytest.raises(DeadlineExceededError, match=f"target at {toy.address} did not answer in time"):
        await client.score(score_call("s", [BOS]), scope(0.2))
    with pytest.raises(DeadlineExceededError, match="deadline passed"):
        await client.score(score_call("s", [BOS]), scope(-1.0))


def _pool(addresses: list[str], **policy: Any) -> ReplicaPool:
    return ReplicaPool(
        "target",
        addresses,
        lambda address: ModelServiceClient(address, "target"),
        policy=ReplicaPolicy(**policy),
    )


async def test_pool_redispatches_to_a_healthy_replica(start_toy: StartToy) -> None:
    down, up = await start_toy(), await start_toy()
    down.state.fail_always = UnavailableError("draining")
    pool = _pool([down.address, up.address])
    pool.mark_verified(down.address)  # so the Score call itself fails there
    try:
        context = [BOS, 9, 10]
        response, used = await pool.call(
            lambda c, _: c.score(score_call("s", context, [11]), scope()), prefer=down.address
        )
        assert used == up.address
        expected = await pool.replica(up.address).client.score(score_call("x", context, [11]), scope())
        assert response.target_samples == expected.target_samples
        # The failed replica is tried last for a while, even when preferred.
        assert pool.pick(prefer=down.address).address == up.address  # type: ignore[union-attr]
        await pool.release(["s"], timeout=5.0)
        assert "s" in down.state.released and "s" in up.state.released
    finally:
        await pool.close()


async def test_pool_with_every_replica_down_raises_the_last_error(start_toy: StartToy) -> None:
    toy = await start_toy()
    address = toy.address
    await toy.stop()
    pool = _pool([address], retry_seconds=0.3)
    try:
        with pytest.raises(UnavailableError, match=f"^target at {address} is unavailable"):
            await pool.call(lambda c, _: c.score(score_call("s", [BOS]), scope()))
        pool.update([])
        with pytest.raises(UnavailableError, match="no usable replica"):
            await pool.call(lambda c, _: c.score(score_call("s", [BOS]), scope()))
    finally:
        await pool.close()


async def test_pool_update_adds_and_removes_replicas_live(start_toy: StartToy) -> None:
    a, b = await start_toy(), await start_toy()
    pool = _pool([a.address])
    try:
        pool.expected_fingerprint = (
            await pool.replica(a.address).client.info(timeout=5)
        ).tokenizer_fingerprint
        b.state.delay_seconds = 0.3
        pool.update([a.address, b.address])
        assert pool.addresses == (a.address, b.address)
        # A call in flight on a replica being removed still returns its (valid) result.
        in_flight = asyncio.ensure_future(
            pool.call(lambda c, _: c.score(score_call("s", [BOS, 9]), scope()), prefer=b.address)
        )
        await asyncio.sleep(0.1)
        pool.update([a.address])
        response, used = await in_flight
        assert used == b.address and len(response.target_samples) == 1
        assert list(pool.addresses) == [a.address]
        _, used = await pool.call(lambda c, _: c.score(score_call("s", [BOS, 9]), scope()), prefer=b.address)
        assert used == a.address
    finally:
        await pool.close()


async def test_pool_quarantines_a_replica_with_another_tokenizer(start_toy: StartToy) -> None:
    good = await start_toy()
    other = await start_toy(word_lm(7), tokenizer=word_level_toy(fim=False))
    pool = _pool([good.address])
    try:
        pool.expected_fingerprint = (
            await pool.replica(good.address).client.info(timeout=5)
        ).tokenizer_fingerprint
        pool.mark_verified(good.address)
        pool.update([other.address, good.address])
        _, used = await pool.call(lambda c, _: c.score(score_call("s", [BOS]), scope()), prefer=other.address)
        assert used == good.address
        assert pool.replica(other.address).quarantined
        assert not any(method in ("Score", "Draft") for method, *_ in other.state.calls)
    finally:
        await pool.close()
