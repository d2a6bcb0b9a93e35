"""A lookup drafter (``services.lookup``) behind a real coordinator over a toy target (real gRPC, loopback).

The drafter presents the target's own tokenizer, so the coordinator pairs them as ``sd``; its point-mass
drafts leave greedy outputs identical to target-only decoding, a round without a match is a plain target
step, and ``auto`` prices the drafter by what its calls measured.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeAlias

import pytest
from polyspec.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc

from coordinator.server import CoordinatorServer
from core.serving.server import GrpcServerSettings
from services.lookup.server import LookupServer, start_lookup_server
from services.lookup.settings import LookupKind, LookupServiceSettings
from tests.support.toy_lm import word_lm
from tests.support.toy_service import ToyServer, toy_info
from tests.unit.coordinator.conftest import TARGET_SEED, coordinator_settings

StartToy = Callable[..., Awaitable[ToyServer]]
StartCoord = Callable[..., Awaitable[CoordinatorServer]]
Stub: TypeAlias = "coordinator_pb2_grpc.CoordinatorServiceAsyncStub"  # type-check-only class

AR, SD = common_pb2.ALGORITHM_AR, common_pb2.ALGORITHM_SD
GREEDY = common_pb2.SamplingParams(temperature=0.0)
PROMPTS = ["alpha beta gamma alpha beta gamma alpha beta", "delta delta delta", "kappa lambda mu nu xi"]


@pytest.fixture
async def start_lookup(toy_tokenizer: Any) -> AsyncIterator[Callable[..., Awaitable[LookupServer]]]:
    started: list[LookupServer] = []

    async def start(kind: LookupKind, **fields: Any) -> LookupServer:
        settings = LookupServiceSettings(
            kind=kind,
            target_model_dir=Path("."),
            grpc=GrpcServerSettings(port=0, shutdown_grace_seconds=0.0),
            **fields,
        )
        info = toy_info(word_lm(TARGET_SEED), toy_tokenizer, model_name=kind)
        server = await start_lookup_server(settings, info=info)
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop(0)


def lookahead(k: int | None = None) -> coordinator_pb2.Lookahead:
    if k is None:
        return coordinator_pb2.Lookahead(policy=coordinator_pb2.LOOKAHEAD_POLICY_AUTO)
    return coordinator_pb2.Lookahead(policy=coordinator_pb2.LOOKAHEAD_POLICY_STATIC, k=k)


@pytest.mark.parametrize("kind", ["ngram", "suffix"])
async def test_greedy_outputs_equal_target_only_decoding(
    kind: LookupKind, start_toy: StartToy, start_coord: StartCoord, start_lookup: Any, channels: Any
) -> None:
    target = await start_toy(word_lm(TARGET_SEED), model_name="toy-target")
    drafter = await start_lookup(kind, suffix_min_match=1, ngram_min=1)
    coordinator = await start_coord(coordinator_settings(target.address, f"127.0.0.1:{drafter.port}"))
    stub = channels(coordinator.port)
    drafted = rounds = tokens = 0
    for prompt in PROMPTS:
        request = coordinator_pb2.GenerateRequest(
            prompt=prompt, max_new_tokens=32, sampling=GREEDY, ignore_eos=True
        )
        ar = await stub.Generate(request, timeout=30)
        request.algorithm = SD
        request.lookahead.CopyFrom(lookahead(4))
        sd = await stub.Generate(request, timeout=30)
        assert list(sd.token_ids) == list(ar.token_ids), prompt
        assert sd.stats.algorithm == SD and not sd.stats.fallback_reason
        assert sd.stats.drafter_forwards == 0  # a lookup runs no model
        drafted, rounds, tokens = (
            drafted + sd.stats.draft_tokens,
            rounds + sd.stats.rounds,
            tokens + len(sd.token_ids),
        )
    assert drafted > 0 and rounds < tokens, "accepted drafts saved target steps"
    empty = drafter.metrics.empty_drafts.collect()[0].samples[0].value
    assert empty > 0, "rounds without a match drafted nothing and stayed plain target steps"
    assert drafter.engine.sessions.session_count == 0, "the coordinator released every sequence"


async def test_sampled_requests_and_auto_price_the_drafter(
    start_toy: StartToy, start_coord: StartCoord, start_lookup: Any, channels: Any
) -> None:
    target = await start_toy(word_lm(TARGET_SEED), model_name="toy-target")
    drafter = await start_lookup("suffix", cross_request_memory_tokens=4096, suffix_min_match=1)
    coordinator = await start_coord(coordinator_settings(target.address, f"127.0.0.1:{drafter.port}"))
    stub = channels(coordinator.port)
    for seed in range(6):
        request = coordinator_pb2.GenerateRequest(
            prompt=PROMPTS[seed % len(PROMPTS)],
            max_new_tokens=40,
            sampling=common_pb2.SamplingParams(temperature=0.8),
            seed=seed,
            algorithm=SD,
            lookahead=lookahead(),
        )
        response = await stub.Generate(request, timeout=30)
        assert len(response.token_ids) == response.stats.output_tokens > 0
        assert response.stats.accepted_tokens <= response.stats.draft_tokens
        assert response.stats.lookahead.startswith("auto")
    estimates = coordinator.services.estimates
    assert estimates.draft_step_seconds is not None, "auto learned the lookup drafter's cost"
    assert 0 < estimates.draft_step_seconds < 0.05
