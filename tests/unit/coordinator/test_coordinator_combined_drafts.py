"""Combining drafts: a lookup drafter asked first every round, the model drafter otherwise (toy target and
drafter, a real lookup service; real gRPC on loopback). Greedy outputs stay the target's own, the sampled
law stays the target's, both sources draft, and a lookup drafter on another tokenizer is refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeAlias

import pytest
from polyspec.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc

from coordinator.pair import PairMismatchError
from coordinator.server import CoordinatorServer
from core.sampling import SamplingConfig
from core.serving.server import GrpcServerSettings
from services.lookup.server import LookupServer, start_lookup_server
from services.lookup.settings import LookupServiceSettings
from tests.support.laws import assert_law, exact_law
from tests.support.toy_lm import word_lm
from tests.support.toy_service import ToyServer, toy_info
from tests.support.toy_tokenizers import BOS, WORDS, word_level_toy
from tests.unit.coordinator.conftest import TARGET_SEED, coordinator_settings

StartToy = Callable[..., Awaitable[ToyServer]]
StartCoord = Callable[..., Awaitable[CoordinatorServer]]
Stub: TypeAlias = "coordinator_pb2_grpc.CoordinatorServiceAsyncStub"  # type-check-only class

AR, SD = common_pb2.ALGORITHM_AR, common_pb2.ALGORITHM_SD
GREEDY = common_pb2.SamplingParams(temperature=0.0)
REPEATING = "alpha beta gamma delta alpha beta gamma delta alpha beta"


def lookahead(k: int | None) -> coordinator_pb2.Lookahead:
    if k is None:
        return coordinator_pb2.Lookahead(policy=coordinator_pb2.LOOKAHEAD_POLICY_AUTO)
    return coordinator_pb2.Lookahead(policy=coordinator_pb2.LOOKAHEAD_POLICY_STATIC, k=k)


@pytest.fixture
async def start_lookup(toy_tokenizer: Any) -> AsyncIterator[Callable[..., Awaitable[LookupServer]]]:
    started: list[LookupServer] = []

    async def start(tokenizer: Any = None) -> LookupServer:
        settings = LookupServiceSettings(
            kind="ngram",
            target_model_dir=Path("."),
            ngram_min=1,
            grpc=GrpcServerSettings(port=0, shutdown_grace_seconds=0.0),
        )
        info = toy_info(word_lm(TARGET_SEED), tokenizer or toy_tokenizer, model_name="ngram")
        server = await start_lookup_server(settings, info=info)
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop(0)


@pytest.fixture
async def combined(
    start_toy: StartToy, start_coord: StartCoord, start_lookup: Any, channels: Any
) -> tuple[Stub, CoordinatorServer, ToyServer]:
    target = await start_toy(word_lm(TARGET_SEED), model_name="toy-target")
    drafter = await start_toy(word_lm(TARGET_SEED, noise=1.0), model_name="toy-drafter")
    lookup = await start_lookup()
    settings = coordinator_settings(
        target.address, drafter.address, lookup_drafter_address=f"127.0.0.1:{lookup.port}"
    )
    coordinator = await start_coord(settings)
    return channels(coordinator.port), coordinator, drafter


def lookup_rounds(coordinator: CoordinatorServer) -> float:
    value = coordinator.services.metrics.registry.get_sample_value(
        "polyspec_rounds_total", {"algorithm": "lookup", "scheduler": "si"}
    )
    return value or 0.0


@pytest.mark.parametrize("k", [4, None], ids=["static4", "auto"])
async def test_greedy_outputs_stay_the_targets_with_both_sources(
    combined: tuple[Stub, CoordinatorServer, ToyServer], k: int | None
) -> None:
    stub, coordinator, drafter = combined
    for prompt in (REPEATING, "kappa lambda mu"):
        request = coordinator_pb2.GenerateRequest(
            prompt=prompt, max_new_tokens=24, sampling=GREEDY, ignore_eos=True, algorithm=AR
        )
        ar = await stub.Generate(request, timeout=30)
        request.algorithm = SD
        request.lookahead.CopyFrom(lookahead(k))
        combined_response = await stub.Generate(request, timeout=30)
        assert list(combined_response.token_ids) == list(ar.token_ids), prompt
    assert lookup_rounds(coordinator) > 0  # the lookup's drafts were verified ...
    assert drafter.state.draft_calls  # ... and the model drafter drafted where the lookup had nothing


async def test_an_ar_request_asks_no_drafter(combined: tuple[Stub, CoordinatorServer, ToyServer]) -> None:
    stub, coordinator, drafter = combined
    request = coordinator_pb2.GenerateRequest(
        prompt=REPEATING, max_new_tokens=8, sampling=GREEDY, algorithm=AR
    )
    response = await stub.Generate(request, timeout=30)
    assert response.stats.target_forwards == len(response.token_ids)
    assert lookup_rounds(coordinator) == 0 and not drafter.state.draft_calls


@pytest.mark.slow
async def test_the_sampled_law_stays_the_targets(combined: tuple[Stub, CoordinatorServer, ToyServer]) -> None:
    """Chi-square of the first two output tokens against the toy target's exact two-token law, with the
    lookup drafter proposing (the prompt repeats) and the model drafter in the other rounds."""
    stub, coordinator, _ = combined
    config = SamplingConfig(temperature=1.0)
    prompt = "gamma delta gamma delta gamma"
    prompt_ids = [BOS, *(WORDS.index(word) for word in prompt.split())]
    law = exact_law(word_lm(TARGET_SEED), config, 2, prompt=prompt_ids)

    async def one(seed: int) -> tuple[int, int]:
        response = await stub.Generate(
            coordinator_pb2.GenerateRequest(
                prompt=prompt,
                sampling=common_pb2.SamplingParams(temperature=1.0),
                algorithm=SD,
                lookahead=lookahead(2),
                seed=seed,
                max_new_tokens=3,
                ignore_eos=True,
            ),
            timeout=30,
        )
        return response.token_ids[0], response.token_ids[1]

    outputs: list[tuple[int, ...]] = []
    for start in range(0, 600, 50):
        outputs.extend(await asyncio.gather(*(one(7000 + s) for s in range(start, start + 50))))
    assert lookup_rounds(coordinator) > 0
    assert_law(outputs, law, alpha=1e-3)


async def test_a_lookup_drafter_on_another_tokenizer_is_refused(
    start_toy: StartToy, start_coord: StartCoord, start_lookup: Any
) -> None:
    target = await start_toy(word_lm(TARGET_SEED), model_name="toy-target")
    lookup = await start_lookup(word_level_toy(fim=False))
    settings = coordinator_settings(target.address, lookup_drafter_address=f"127.0.0.1:{lookup.port}")
    with pytest.raises(PairMismatchError, match="a lookup drafter proposes the target's own token ids"):
        await start_coord(settings)
