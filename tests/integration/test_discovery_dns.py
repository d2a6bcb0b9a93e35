"""DNS and static replica discovery, ``--target`` spec parsing and EndpointSlice readiness rules.

The DNS source is driven through an injected resolver that answers from a queue, one answer per poll,
so every poll happens exactly when the test supplies its answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import pytest
from kubernetes import client

from coordinator.discovery import (
    DnsReplicas,
    EndpointSliceReplicas,
    StaticReplicas,
    parse_address,
    ready_addresses,
    resolve_host,
    source_from_spec,
)
from core.errors import InvalidArgumentError

STEP_TIMEOUT = 10.0
Answer = list[str] | OSError


class ScriptedResolver:
    """Answers lookups from a queue; records the names it was asked for."""

    def __init__(self) -> None:
        self.answers: asyncio.Queue[Answer] = asyncio.Queue()
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append((host, port))
        answer = await self.answers.get()
        if isinstance(answer, OSError):
            raise answer
        return answer


async def _next(updates: AsyncIterator[frozenset[str]]) -> frozenset[str]:
    return await asyncio.wait_for(anext(updates), STEP_TIMEOUT)


async def test_dns_yields_the_first_set_then_only_changes() -> None:
    resolver = ScriptedResolver()
    source = DnsReplicas("target.ns.svc.cluster.local", 50052, interval_seconds=0, resolver=resolver)
    for answer in (["10.0.0.1"], ["10.0.0.1"], ["10.0.0.2", "10.0.0.1"], ["fd00::7"]):
        resolver.answers.put_nowait(answer)
    async with contextlib.aclosing(source.updates()) as updates:
        assert await _next(updates) == {"10.0.0.1:50052"}
        assert await _next(updates) == {"10.0.0.1:50052", "10.0.0.2:50052"}  # the repeat was skipped
        assert await _next(updates) == {"[fd00::7]:50052"}
    assert resolver.asked == [("target.ns.svc.cluster.local", 50052)] * 4


async def test_dns_no_records_is_empty_and_a_failed_lookup_keeps_the_last_set() -> None:
    resolver = ScriptedResolver()
    source = DnsReplicas("target", 50052, interval_seconds=0, resolver=resolver)
    no_records = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    try_again = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    for answer in (no_records, ["10.0.0.1"], try_again, OSError("resolver down"), no_records):
        resolver.answers.put_nowait(answer)
    async with contextlib.aclosing(source.updates()) as updates:
        assert await _next(updates) == frozenset()
        assert await _next(updates) == {"10.0.0.1:50052"}
        assert await _next(updates) == frozenset()  # two failures kept the set; no records emptied it
    assert len(resolver.asked) == 5


async def test_system_resolver_finds_localhost() -> None:
    assert "127.0.0.1" in await resolve_host("localhost", 50052)


async def test_static_replicas_yield_once() -> None:
    source = StaticReplicas(["10.0.0.1:50052", "[::1]:50053", "10.0.0.1:50052"])
    assert [s async for s in source.updates()] == [{"10.0.0.1:50052", "[::1]:50053"}]


def test_specs_pick_their_source() -> None:
    static = source_from_spec("a:1, b:2")
    assert isinstance(static, StaticReplicas) and static.addresses == {"a:1", "b:2"}
    assert isinstance(source_from_spec("static:///a:1"), StaticReplicas)
    dns = source_from_spec("dns:///polyspec-target.ml.svc.cluster.local:50052", dns_interval_seconds=2)
    assert isinstance(dns, DnsReplicas)
    assert (dns.host, dns.port, dns.interval_seconds) == ("polyspec-target.ml.svc.cluster.local", 50052, 2)
    slices = source_from_spec("kubernetes:///polyspec-target.ml:grpc")
    assert isinstance(slices, EndpointSliceReplicas)
    assert (slices.namespace, slices.service, slices.port_name) == ("ml", "polyspec-target", "grpc")
    assert slices.label_selector == "kubernetes.io/service-name=polyspec-target"


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("", "at least one"),
        ("host-without-port", "HOST:PORT"),
        ("a:0", "1..65535"),
        ("a:http", "1..65535"),
        ("::1:50052", "brackets"),
        ("dns://resolver/name:53", "dns:///"),
        ("kubernetes:///service-without-namespace:grpc", "SERVICE.NAMESPACE:PORT"),
        ("kubernetes:///svc.ns", "SERVICE.NAMESPACE:PORT"),
        ("consul:///svc:1", "unknown scheme"),
    ],
)
def test_bad_specs_name_the_field_and_reason(spec: str, reason: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        source_from_spec(spec)
    assert caught.value.field == "target"
    assert reason in caught.value.reason


def test_parse_address_handles_ipv6() -> None:
    assert parse_address("[fd00::1]:50052") == ("fd00::1", 50052)
    assert parse_address("polyspec-target-0.polyspec-target:50052") == (
        "polyspec-target-0.polyspec-target",
        50052,
    )


async def test_endpointslices_outside_a_cluster_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    source = EndpointSliceReplicas("ns", "svc", "grpc")
    with pytest.raises(InvalidArgumentError, match="in-cluster credentials"):
        await anext(source.updates())


def _slice(address_type: str, endpoints: list[client.V1Endpoint], port_name: str = "grpc") -> object:
    return client.V1EndpointSlice(
        address_type=address_type,
        endpoints=endpoints,
        ports=[client.DiscoveryV1EndpointPort(name=port_name, port=50052)],
    )


def test_ready_addresses_follow_the_endpoint_conditions() -> None:
    def endpoint(address: str, ready: bool | None) -> client.V1Endpoint:
        conditions = None if ready is None else client.V1EndpointConditions(ready=ready)
        return client.V1Endpoint(addresses=[address, "ignored"], conditions=conditions)

    ipv4 = _slice(
        "IPv4", [endpoint("10.0.0.1", True), endpoint("10.0.0.2", False), endpoint("10.0.0.3", None)]
    )
    assert ready_addresses(ipv4, "grpc") == {"10.0.0.1:50052", "10.0.0.3:50052"}
    assert ready_addresses(ipv4, "50052") == {"10.0.0.1:50052", "10.0.0.3:50052"}
    assert ready_addresses(ipv4, "metrics") == frozenset()
    ipv6 = _slice("IPv6", [endpoint("fd00::1", True)])
    assert ready_addresses(ipv6, "grpc") == {"[fd00::1]:50052"}
    assert ready_addresses(_slice("IPv4", []), "grpc") == frozenset()
