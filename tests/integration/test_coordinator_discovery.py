"""The coordinator follows target discovery live: replicas found by a source join and leave the pool."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from coordinator.config import CoordinatorSettings
from coordinator.discovery import DiscoveryError
from coordinator.replicas import ReplicaPool
from coordinator.server import _first_replica_set, follow_discovery
from core.errors import UnavailableError


class _QueueSource:
    def __init__(self) -> None:
        self.queue: asyncio.Queue[frozenset[str] | Exception] = asyncio.Queue()

    async def updates(self) -> AsyncIterator[frozenset[str]]:
        while True:
            item = await self.queue.get()
            if isinstance(item, Exception):
                raise item
            yield item


def _pool() -> ReplicaPool:
    from coordinator.clients import ModelServiceClient

    return ReplicaPool("target", ["127.0.0.1:1"], lambda address: ModelServiceClient(address, "target"))


def test_settings_take_exactly_one_way_to_find_targets() -> None:
    CoordinatorSettings(target_discovery="dns:///polyspec-target.ns.svc.cluster.local:50052")
    CoordinatorSettings(target_addresses=("127.0.0.1:50052",))
    with pytest.raises(ValueError, match="exactly one"):
        CoordinatorSettings()
    with pytest.raises(ValueError, match="exactly one"):
        CoordinatorSettings(target_addresses=("127.0.0.1:1",), target_discovery="dns:///x:1")
    with pytest.raises(ValueError, match="dns:///"):
        CoordinatorSettings(target_discovery="http://x:1")


async def test_first_non_empty_set_seeds_the_pool() -> None:
    source = _QueueSource()
    updates = aiter(source.updates())
    source.queue.put_nowait(frozenset())
    source.queue.put_nowait(frozenset({"10.0.0.2:50052", "10.0.0.1:50052"}))
    assert await _first_replica_set(updates, timeout=5) == ("10.0.0.1:50052", "10.0.0.2:50052")


async def test_no_replica_in_time_is_unavailable() -> None:
    source = _QueueSource()
    with pytest.raises(UnavailableError, match="no ready replica"):
        await _first_replica_set(aiter(source.updates()), timeout=0.05)


async def test_follow_applies_sets_and_stops_on_discovery_failure() -> None:
    source = _QueueSource()
    pool = _pool()
    stopped = asyncio.Event()
    task = asyncio.create_task(follow_discovery(aiter(source.updates()), pool, stopped.set))
    source.queue.put_nowait(frozenset({"127.0.0.1:2", "127.0.0.1:3"}))
    source.queue.put_nowait(frozenset({"127.0.0.1:3"}))
    source.queue.put_nowait(DiscoveryError("watch answered garbage"))
    await asyncio.wait_for(stopped.wait(), timeout=5)
    await task
    assert pool.addresses == ("127.0.0.1:3",)
    await pool.close()
