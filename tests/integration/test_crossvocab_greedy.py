"""TLI, SLEM and SLRS through the real services, across real vocabularies (real gRPC on loopback).

Greedy identity (ALGORITHMS.md §8.3): at temperature 0 every cross-vocabulary algorithm outputs what
``ar`` (target-only greedy decoding) outputs, token for token — SmolLM2-135M (49,152-token byte-level
BPE) drafting for Qwen2.5-Coder-0.5B (151,936 rows, another byte-level BPE) on HumanEval prompts and
adversarial ones (leading spaces, emoji and CJK, tabs, special-token strings, EOS inside a draft,
max_new_tokens 1 and 2), and Gemma-3-270M (262,144-token SentencePiece) drafting for the same target.
Sampling at temperature 0.7 is reproducible per seed for each algorithm and the statistics name the
algorithm that ran. The services and coordinators are shared by the whole module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from polyspec.v1 import common_pb2, coordinator_pb2

from services.model.server import ModelServer
from tests.integration.real_services import (
    ADVERSARIAL_PROMPTS,
    Services,
    Stub,
    human_eval_prompts,
    static,
)
from tests.support.greedy import assert_greedy_identical

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.real_model, pytest.mark.slow]

AR = common_pb2.ALGORITHM_AR
TLI, SLEM, SLRS = common_pb2.ALGORITHM_TLI, common_pb2.ALGORITHM_SLEM, common_pb2.ALGORITHM_SLRS
CROSS = {"tli": TLI, "slem": SLEM, "slrs": SLRS}
GREEDY = common_pb2.SamplingParams(temperature=0.0)
NEW_TOKENS = 16
HUMAN_EVAL_COUNT = 10
GEMMA_PROMPTS = 5
EOS_CHAT = coordinator_pb2.Chat(
    messages=[coordinator_pb2.ChatMessage(role="user", content="Answer with one word: is water wet?")]
)


def request(
    algorithm: common_pb2.Algorithm.ValueType, k: int = 4, **fields: Any
) -> coordinator_pb2.GenerateRequest:
    fields.setdefault("max_new_tokens", NEW_TOKENS)
    fields.setdefault("sampling", GREEDY)
    return coordinator_pb2.GenerateRequest(algorithm=algorithm, lookahead=static(k), **fields)


class ArOutputs:
    """Target-only greedy outputs, computed once per input (every coordinator shares the target)."""

    def __init__(self, stub: Stub) -> None:
        self._stub = stub
        self._outputs: dict[bytes, coordinator_pb2.GenerateResponse] = {}

    async def get(self, **fields: Any) -> coordinator_pb2.GenerateResponse:
        key = request(AR, **fields).SerializeToString(deterministic=True)
        if key not in self._outputs:
            self._outputs[key] = await self._stub.Generate(request(AR, **fields))
        return self._outputs[key]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def qwen(services: Services, qwen05_dir: Path) -> ModelServer:
    return await services.model(qwen05_dir)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def smollm2_drafting(services: Services, qwen: ModelServer, smollm2_dir: Path) -> Stub:
    """SmolLM2-135M drafting for Qwen2.5-Coder-0.5B."""
    return await services.coordinator(qwen, await services.model(smollm2_dir))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gemma_drafting(services: Services, qwen: ModelServer, gemma_dir: Path) -> Stub:
    """Gemma-3-270M drafting for Qwen2.5-Coder-0.5B."""
    return await services.coordinator(qwen, await services.model(gemma_dir))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def ar_outputs(smollm2_drafting: Stub) -> ArOutputs:
    return ArOutputs(smollm2_drafting)


async def _check_identity(stub: Stub, ar_outputs: ArOutputs, k: int, **fields: Any) -> dict[str, int]:
    """Every cross-vocabulary algorithm equals ``ar``; returns each one's accepted tokens."""
    ar = await ar_outputs.get(**fields)
    accepted: dict[str, int] = {}
    for name, algorithm in CROSS.items():
        response = await stub.Generate(request(algorithm, k, **fields))
        if assert_greedy_identical(response, ar, (name, fields, response.stats)):
            assert response.text == ar.text and response.finish_reason == ar.finish_reason
        assert response.stats.algorithm == algorithm and not response.stats.fallback_reason
        accepted[name] = response.stats.accepted_tokens
    return accepted


async def test_smollm2_greedy_identity_on_human_eval(smollm2_drafting: Stub, ar_outputs: ArOutputs) -> None:
    totals = dict.fromkeys(CROSS, 0)
    for index, prompt in enumerate(human_eval_prompts(HUMAN_EVAL_COUNT)):
        accepted = await _check_identity(smollm2_drafting, ar_outputs, k=(3, 5)[index % 2], prompt=prompt)
        for name, count in accepted.items():
            totals[name] += count
    assert all(count > 0 for count in totals.values()), totals


@pytest.mark.parametrize("prompt", ADVERSARIAL_PROMPTS, ids=range(len(ADVERSARIAL_PROMPTS)))
async def test_smollm2_greedy_identity_on_adversarial_prompts(
    smollm2_drafting: Stub, ar_outputs: ArOutputs, prompt: str
) -> None:
    await _check_identity(smollm2_drafting, ar_outputs, k=6, prompt=prompt)


async def test_smollm2_eos_inside_a_draft(smollm2_drafting: Stub, ar_outputs: ArOutputs) -> None:
    await _check_identity(smollm2_drafting, ar_outputs, k=8, chat=EOS_CHAT)
    ar = await ar_outputs.get(chat=EOS_CHAT)
    assert ar.finish_reason == coordinator_pb2.FINISH_REASON_STOP


@pytest.mark.parametrize("max_new_tokens", [1, 2])
async def test_smollm2_token_limits(
    smollm2_drafting: Stub, ar_outputs: ArOutputs, max_new_tokens: int
) -> None:
    prompt = human_eval_prompts(1)[0]
    await _check_identity(smollm2_drafting, ar_outputs, k=8, prompt=prompt, max_new_tokens=max_new_tokens)


async def test_gemma_greedy_identity(gemma_drafting: Stub, ar_outputs: ArOutputs) -> None:
    prompts = [*human_eval_prompts(GEMMA_PROMPTS - 2), *ADVERSARIAL_PROMPTS[:2]]
    totals = dict.fromkeys(CROSS, 0)
    for prompt in prompts:  # inputs of the tests above: their ar outputs are reused
        accepted = await _check_identity(gemma_drafting, ar_outputs, k=4, prompt=prompt)
        for name, count in accepted.items():
            totals[name] += count
    assert totals["slem"] > 0, totals


async def test_sampling_is_reproducible_per_algorithm(smollm2_drafting: Stub) -> None:
    prompt = human_eval_prompts(3)[2]
    sampling = common_pb2.SamplingParams(temperature=0.7)
    for name, algorithm in CROSS.items():
        sampled = request(algorithm, 4, prompt=prompt, sampling=sampling, seed=7)
        first = await smollm2_drafting.Generate(sampled)
        again = await smollm2_drafting.Generate(sampled)
        assert list(first.token_ids) == list(again.token_ids), name
        assert first.stats.algorithm == algorithm and not first.stats.fallback_reason
        assert first.stats.draft_tokens > 0
        if algorithm == TLI:
            assert first.stats.accepted_tokens > 0
