"""Coordinator start-up (pair checks, unreachable services), health, metrics and request errors over gRPC."""

from __future__ import annotations

import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from polyspec.v1 import common_pb2, coordinator_pb2

from coordinator.pair import PairMismatchError
from coordinator.server import SERVICE_NAME, CoordinatorServer, start_coordinator
from core.errors import UnavailableError
from tests.support.toy_lm import word_lm
from tests.support.toy_service import ToyServer
from tests.unit.coordinator.conftest import TARGET_SEED, coordinator_settings
from tests.unit.coordinator.test_coordinator_wire import BAD_REQUESTS

StartToy = Callable[..., Awaitable[ToyServer]]
StartCoord = Callable[..., Awaitable[CoordinatorServer]]


async def test_declared_fingerprints_must_match(start_toy: StartToy, start_coord: StartCoord) -> None:
    target = await start_toy()
    fingerprint = target.info.tokenizer_fingerprint
    server = await start_coord(coordinator_settings(target.address, target_tokenizer_fingerprint=fingerprint))
    assert server.services.pair.target.fingerprint == fingerprint
    with pytest.raises(
        PairMismatchError, match=f"target at {target.address} .* uses tokenizer {fingerprint}"
    ):
        await start_coordinator(coordinator_settings(target.address, target_tokenizer_fingerprint="0" * 64))
    with pytest.raises(PairMismatchError, match="drafter at"):
        await start_coordinator(
            coordinator_settings(target.address, target.address, drafter_tokenizer_fingerprint="1" * 64)
        )


async def test_unreachable_target_refuses_start(start_toy: StartToy) -> None:
    toy = await start_toy()
    address = toy.address
    await toy.stop()
    with pytest.raises(UnavailableError, match=f"^target at {address} did not answer Info within 0.5 s"):
        await start_coordinator(coordinator_settings(address, startup_timeout_seconds=0.5))


async def test_start_uses_the_first_replica_that_answers(
    start_toy: StartToy, start_coord: StartCoord
) -> None:
    down = await start_toy()
    down_address = down.address
    await down.stop()
    up = await start_toy()
    server = await start_coord(coordinator_settings([down_address, up.address], startup_timeout_seconds=3.0))
    assert server.services.pair.target.address == up.address


async def test_health_metrics_and_bad_requests(
    start_toy: StartToy, start_coord: StartCoord, channels: Any
) -> None:
    target = await start_toy(word_lm(TARGET_SEED))
    drafter = await start_toy(word_lm(TARGET_SEED, noise=1.0))
    server = await start_coord(
        coordinator_settings(
            target.address, drafter.address, metrics_port=0, max_new_tokens_cap=100, max_lookahead_k=8
        )
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        answer = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
    stub = channels(server.port)
    for field, bad in BAD_REQUESTS:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Generate(bad)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert str(info.value.details()).startswith(f"{field}: "), (field, info.value.details())
    disco = coordinator_pb2.Lookahead(policy=coordinator_pb2.LOOKAHEAD_POLICY_DISCO)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(
            coordinator_pb2.GenerateRequest(prompt="alpha", max_new_tokens=2, lookahead=disco)
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(info.value.details()).startswith("lookahead.policy: disco")
    response = await stub.Generate(
        coordinator_pb2.GenerateRequest(
            prompt="alpha beta",
            max_new_tokens=12,
            sampling=common_pb2.SamplingParams(temperature=0.0),
            algorithm=common_pb2.ALGORITHM_SD,
            lookahead=coordinator_pb2.Lookahead(policy=coordinator_pb2.LOOKAHEAD_POLICY_CONFIDENCE, k=6),
            ignore_eos=True,
        )
    )
    assert response.stats.lookahead == "confidence:6:0.40"
    assert response.stats.bytes_sent > 0 and response.stats.bytes_received > 0
    assert response.stats.time_to_first_token_seconds <= response.stats.total_seconds
    assert response.stats.tokens_per_second > 0
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5) as page:
        metrics = page.read().decode()
    registry = server.services.metrics.registry
    assert (
        registry.get_sample_value("polyspec_spec_decode_num_draft_tokens_total")
        == response.stats.draft_tokens
    )
    assert (
        registry.get_sample_value("polyspec_spec_decode_num_accepted_tokens_total")
        == response.stats.accepted_tokens
    )
    assert (
        registry.get_sample_value(
            "polyspec_requests_total", {"algorithm": "sd", "finish_reason": "length", "scheduler": "si"}
        )
        == 1
    )
    assert (
        registry.get_sample_value("polyspec_request_failures_total", {"code": "INVALID_ARGUMENT"})
        == len(BAD_REQUESTS) + 1
    )
    for name in (
        "polyspec_spec_decode_num_drafts_total",
        "polyspec_spec_decode_num_emitted_tokens_total",
        "polyspec_time_to_first_token_seconds_bucket",
        "polyspec_inter_token_latency_seconds_bucket",
        'polyspec_model_call_seconds_count{method="Score",outcome="ok",role="target"}',
        'polyspec_rounds_total{algorithm="sd",scheduler="si"}',
    ):
        assert name in metrics
