"""TLI, SLEM and SLRS through a real coordinator over toy services with two different vocabularies.

The target runs a byte-level BPE, the drafter a SentencePiece-style BPE with a dummy prefix and byte
fallback (``tests.support.toy_tokenizers``); both toy LMs like to write one reference text, so drafts
are accepted often and rejected often. Checked: algorithm selection and the reported algorithm, greedy
identity with ``ar``, seeded reproducibility, the sampled output law, TLI's token mask (registered once per
replica, again after it was lost, told apart from a context miss), the drafter's re-sync to the
committed text with its cache cropped rather than rebuilt, and SLRS's over-budget rounds.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import grpc
import pytest
from grpc.aio import Metadata
from polyspec.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc

from coordinator.clients import common_prefix_len, map_rpc_error
from coordinator.server import CoordinatorServer
from coordinator.vocab import CanonicalVocab, build_intersection
from core.errors import ContextMissError, PolyspecError, UnknownTokenMaskError
from core.sampling import SamplingConfig
from core.serving.status import status_for
from tests.support.laws import assert_law, exact_law
from tests.support.toy_lm import ReferenceLM
from tests.support.toy_service import ToyServer
from tests.support.toy_tokenizers import byte_level_transformers, sentencepiece_transformers
from tests.unit.coordinator.conftest import TARGET_SEED, coordinator_settings

StartToy = Callable[..., Awaitable[ToyServer]]
StartCoord = Callable[..., Awaitable[CoordinatorServer]]
Stub: TypeAlias = "coordinator_pb2_grpc.CoordinatorServiceAsyncStub"  # type-check-only class

AR, SD = common_pb2.ALGORITHM_AR, common_pb2.ALGORITHM_SD
TLI, SLEM, SLRS = common_pb2.ALGORITHM_TLI, common_pb2.ALGORITHM_SLEM, common_pb2.ALGORITHM_SLRS
CROSS = (TLI, SLEM, SLRS)
AUTO = common_pb2.ALGORITHM_AUTO
GREEDY = common_pb2.SamplingParams(temperature=0.0)
# The text the toy models like to write; prompts are prefixes of it.
REFERENCE = (
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n"
    "\n\ndef add(a, b):\n    return a + b\n"
)
PROMPTS = [
    "def fibonacci(n):\n",
    "def fibonacci(n):\n    if n < 2:\n        return",
    "def fib",  # ends inside a token of both vocabularies
    REFERENCE[:-14],  # the reference ends (EOS) within the generation
    "   class Tree:\n\t",  # leading spaces and a tab, off the reference: noise only
    "naïve 😀 ",  # multi-byte characters the target spells with byte tokens
]


def static(k: int) -> coordinator_pb2.Lookahead:
    return coordinator_pb2.Lookahead(policy=coordinator_pb2.LOOKAHEAD_POLICY_STATIC, k=k)


def gen_request(prompt: str, algorithm: int, **fields: Any) -> coordinator_pb2.GenerateRequest:
    fields.setdefault("max_new_tokens", 24)
    fields.setdefault("sampling", GREEDY)
    return coordinator_pb2.GenerateRequest(prompt=prompt, algorithm=algorithm, **fields)  # type: ignore[arg-type]


@dataclass
class CrossPair:
    stub: Stub
    coordinator: CoordinatorServer
    target: ToyServer
    drafter: ToyServer
    target_lm: ReferenceLM


@pytest.fixture(scope="session")
def target_tokenizer() -> Any:
    return byte_level_transformers()


@pytest.fixture(scope="session")
def drafter_tokenizer() -> Any:
    return sentencepiece_transformers()


@pytest.fixture
async def cross(
    start_toy: StartToy,
    start_coord: StartCoord,
    channels: Any,
    target_tokenizer: Any,
    drafter_tokenizer: Any,
) -> CrossPair:
    """A coordinator over a byte-level target and a SentencePiece drafter that often disagree."""
    target_lm = ReferenceLM(target_tokenizer, seed=TARGET_SEED, reference=REFERENCE, bonus=6.0)
    drafter_lm = ReferenceLM(drafter_tokenizer, seed=TARGET_SEED + 1, reference=REFERENCE, bonus=4.0)
    target = await start_toy(
        target_lm, tokenizer=target_tokenizer, eos_token_ids=[target_lm.eos], model_name="toy-bpe"
    )
    drafter = await start_toy(
        drafter_lm,
        tokenizer=drafter_tokenizer,
        eos_token_ids=[drafter_lm.eos],
        model_name="toy-spm",
        max_support=16,
    )
    coordinator = await start_coord(coordinator_settings(target.address, drafter.address))
    return CrossPair(channels(coordinator.port), coordinator, target, drafter, target_lm)


async def test_auto_picks_by_temperature_and_the_stats_name_what_ran(cross: CrossPair) -> None:
    greedy = await cross.stub.Generate(gen_request(PROMPTS[0], AUTO, lookahead=static(3)))
    assert greedy.stats.algorithm == SLEM and greedy.stats.lookahead == "static:3"
    sampled = await cross.stub.Generate(
        gen_request(PROMPTS[0], AUTO, sampling=common_pb2.SamplingParams(temperature=0.8), seed=1)
    )
    assert sampled.stats.algorithm == TLI and sampled.stats.draft_tokens > 0
    for algorithm in CROSS:
        response = await cross.stub.Generate(gen_request(PROMPTS[0], algorithm, lookahead=static(2)))
        assert response.stats.algorithm == algorithm and not response.stats.fallback_reason
        assert response.stats.draft_tokens > 0
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await cross.stub.Generate(gen_request(PROMPTS[0], SD))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "sd needs drafter and target with the same tokenizer" in str(info.value.details())


async def test_intersection_coverage_is_reported(
    cross: CrossPair, target_tokenizer: Any, drafter_tokenizer: Any
) -> None:
    drafter = CanonicalVocab.from_tokenizer(drafter_tokenizer, drafter_tokenizer.all_special_ids)
    target = CanonicalVocab.from_tokenizer(target_tokenizer, target_tokenizer.all_special_ids)
    expected = build_intersection(drafter, target).coverage
    registry = cross.coordinator.services.metrics.registry
    assert 0.3 < expected < 1.0
    assert registry.get_sample_value("polyspec_coordinator_vocab_intersection_coverage") == pytest.approx(
        expected
    )


async def test_greedy_identity_for_every_algorithm(cross: CrossPair) -> None:
    accepted: Counter[int] = Counter()
    drafted: Counter[int] = Counter()
    stopped = 0
    for prompt, k in itertools.product(PROMPTS, (1, 3, 6)):
        ar = await cross.stub.Generate(gen_request(prompt, AR))
        stopped += ar.finish_reason == coordinator_pb2.FINISH_REASON_STOP
        for algorithm in CROSS:
            response = await cross.stub.Generate(gen_request(prompt, algorithm, lookahead=static(k)))
            assert list(response.token_ids) == list(ar.token_ids), (prompt, k, algorithm)
            assert response.text == ar.text and response.finish_reason == ar.finish_reason
            assert response.stats.algorithm == algorithm and not response.stats.fallback_reason
            accepted[algorithm] += response.stats.accepted_tokens
            drafted[algorithm] += response.stats.draft_tokens
    assert stopped >= 3  # the reference's end: EOS inside drafts
    for algorithm in CROSS:
        assert 0 < accepted[algorithm] < drafted[algorithm], (algorithm, accepted, drafted)


async def test_max_new_tokens_one_and_two(cross: CrossPair) -> None:
    for max_new_tokens, algorithm in itertools.product((1, 2), CROSS):
        ar = await cross.stub.Generate(gen_request(PROMPTS[1], AR, max_new_tokens=max_new_tokens))
        response = await cross.stub.Generate(
            gen_request(PROMPTS[1], algorithm, max_new_tokens=max_new_tokens, lookahead=static(6))
        )
        assert list(response.token_ids) == list(ar.token_ids) and len(ar.token_ids) == max_new_tokens
        assert response.stats.draft_tokens <= (max_new_tokens - 1) * response.stats.rounds


async def test_seeded_sampling_is_reproducible(cross: CrossPair) -> None:
    sampling = common_pb2.SamplingParams(temperature=0.7)
    for algorithm in CROSS:
        outputs = []
        accepted = 0
        for seed in (21, 22):
            request = gen_request(PROMPTS[0], algorithm, sampling=sampling, seed=seed, lookahead=static(3))
            first, again = await cross.stub.Generate(request), await cross.stub.Generate(request)
            assert list(first.token_ids) == list(again.token_ids)
            assert first.stats.algorithm == algorithm and first.stats.seed == seed
            assert first.stats.draft_tokens > 0
            accepted += first.stats.accepted_tokens
            outputs.append(list(first.token_ids))
        assert outputs[0] != outputs[1]
        assert accepted > 0 or algorithm is not TLI


async def test_token_mask_is_registered_once_per_replica(cross: CrossPair) -> None:
    drafter = cross.drafter
    first = await cross.stub.Generate(gen_request(PROMPTS[0], TLI, lookahead=static(3)))
    for prompt in PROMPTS[1:3]:
        await cross.stub.Generate(gen_request(prompt, TLI, lookahead=static(3)))
    await cross.stub.Generate(gen_request(PROMPTS[0], SLEM, lookahead=static(3)))
    assert drafter.state.mask_registrations == 1 and drafter.state.mask_misses == 0
    (mask_id,) = drafter.state.masks
    assert {c.token_mask_id for c in drafter.state.draft_calls} == {mask_id, ""}
    # The replica restarts: its masks and caches are gone. The unknown mask is registered again and
    # the context resent whole: two different FAILED_PRECONDITION causes, both recovered.
    drafter.state.masks.clear()
    drafter.state.held.clear()
    again = await cross.stub.Generate(gen_request(PROMPTS[0], TLI, lookahead=static(3)))
    assert list(again.token_ids) == list(first.token_ids) and not again.stats.fallback_reason
    assert drafter.state.mask_registrations == 2 and drafter.state.mask_misses == 1
    registry = cross.coordinator.services.metrics.registry
    registered = registry.get_sample_value("polyspec_token_mask_registrations_total", {"outcome": "ok"})
    assert registered == 2


async def test_context_miss_and_mask_miss_together(cross: CrossPair) -> None:
    baseline = await cross.stub.Generate(gen_request(PROMPTS[1], TLI, lookahead=static(2)))
    cross.drafter.state.evict_every_call = True  # every delta misses
    cross.drafter.state.masks.clear()
    response = await cross.stub.Generate(gen_request(PROMPTS[1], TLI, lookahead=static(2)))
    assert list(response.token_ids) == list(baseline.token_ids) and not response.stats.fallback_reason
    assert cross.drafter.state.mask_misses == 1
    assert sum(cached == 0 for method, _, cached, _ in cross.drafter.state.calls if method == "Draft") > 2


def test_failed_precondition_causes_are_told_apart_by_the_reason_not_the_text() -> None:
    def error(exc: PolyspecError | None, details: str) -> grpc.aio.AioRpcError:
        trailing = Metadata(*status_for(exc).trailing_metadata) if exc is not None else Metadata()
        return grpc.aio.AioRpcError(grpc.StatusCode.FAILED_PRECONDITION, Metadata(), trailing, details, None)

    # The message text no longer decides: a mask miss worded like anything, a context miss that
    # happens to mention SetTokenMask, and a bare status without a reason (a context miss).
    mask = map_rpc_error(error(UnknownTokenMaskError("gone"), "gone"), "drafter", "h:1")
    text = "cached prefix not held; register it with SetTokenMask"
    miss = map_rpc_error(error(ContextMissError(text), text), "drafter", "h:1")
    bare = map_rpc_error(error(None, text), "drafter", "h:1")
    assert isinstance(mask, UnknownTokenMaskError) and str(mask) == "drafter at h:1: gone"
    assert isinstance(miss, ContextMissError) and not isinstance(miss, UnknownTokenMaskError)
    assert isinstance(bare, ContextMissError) and not isinstance(bare, UnknownTokenMaskError)


async def test_drafter_is_resynced_to_the_committed_text(cross: CrossPair, drafter_tokenizer: Any) -> None:
    drafter = cross.drafter
    prompt = PROMPTS[0]
    prompt_ids = drafter_tokenizer(prompt)["input_ids"]
    response = await cross.stub.Generate(gen_request(prompt, SLEM, lookahead=static(4), max_new_tokens=40))
    assert 0 < response.stats.accepted_tokens < response.stats.draft_tokens  # rejections happened
    assert [method for method, *_ in drafter.state.calls] == ["Draft"] * len(drafter.state.contexts)
    calls = zip(drafter.state.calls, drafter.state.contexts, strict=True)
    for index, ((_, _, cached, _), context) in enumerate(calls):
        assert context[: len(prompt_ids)] == prompt_ids
        seen = drafter_tokenizer.decode(context, skip_special_tokens=True)[len(prompt) :]
        assert response.text.startswith(seen), (seen, response.text)  # committed text only
        if index:
            assert cached >= len(prompt_ids)  # the cache is reused, never rebuilt
    # After a Draft the drafter holds context + draft tokens. The next context keeps the accepted
    # draft tokens (no recompute) and drops the rejected ones (the service crops its cache there).
    kept = cropped = 0
    for index in range(1, len(drafter.state.contexts)):
        held, context = drafter.state.held_after[index - 1], drafter.state.contexts[index]
        common = common_prefix_len(held, context)
        cropped += common < len(held)
        kept += common > len(drafter.state.contexts[index - 1])
    assert cropped > 0 and kept > 0


async def test_slrs_rounds_over_budget_run_as_slem(cross: CrossPair) -> None:
    ar = await cross.stub.Generate(gen_request(PROMPTS[1], AR))
    slrs = await cross.stub.Generate(gen_request(PROMPTS[1], SLRS, lookahead=static(4)))
    registry = cross.coordinator.services.metrics.registry
    assert registry.get_sample_value("polyspec_slrs_over_budget_rounds_total") == 0
    cross.coordinator.services.slrs_enumeration_budget = 0
    over = await cross.stub.Generate(gen_request(PROMPTS[1], SLRS, lookahead=static(4)))
    assert list(over.token_ids) == list(slrs.token_ids) == list(ar.token_ids)
    assert over.stats.algorithm == SLRS and over.stats.draft_tokens > 0
    over_budget = registry.get_sample_value("polyspec_slrs_over_budget_rounds_total")
    assert over_budget is not None and 0 < over_budget <= over.stats.rounds


async def test_same_vocabulary_pairs_run_sd(
    start_toy: StartToy, start_coord: StartCoord, channels: Any, target_tokenizer: Any
) -> None:
    # A drafter whose tokenizer only adds placeholder tokens: different fingerprint, same vocabulary.
    padded = byte_level_transformers()
    padded.add_special_tokens({"additional_special_tokens": ["<|extra_0|>", "<|extra_1|>"]})
    target_lm = ReferenceLM(target_tokenizer, seed=TARGET_SEED, reference=REFERENCE)
    drafter_lm = ReferenceLM(padded, seed=TARGET_SEED + 2, reference=REFERENCE, bonus=4.0)
    target = await start_toy(target_lm, tokenizer=target_tokenizer, eos_token_ids=[target_lm.eos])
    drafter = await start_toy(drafter_lm, tokenizer=padded, eos_token_ids=[drafter_lm.eos])
    coordinator = await start_coord(coordinator_settings(target.address, drafter.address))
    assert target.info.tokenizer_fingerprint != drafter.info.tokenizer_fingerprint
    assert coordinator.services.pair.same_tokenizer
    stub = channels(coordinator.port)
    ar = await stub.Generate(gen_request(PROMPTS[1], AR))
    auto = await stub.Generate(gen_request(PROMPTS[1], AUTO, lookahead=static(3)))
    assert auto.stats.algorithm == SD and list(auto.token_ids) == list(ar.token_ids)
    for algorithm in CROSS:
        response = await stub.Generate(gen_request(PROMPTS[1], algorithm, lookahead=static(3)))
        assert response.stats.algorithm == SD and list(response.token_ids) == list(ar.token_ids)
        assert "share one vocabulary: sd ran" in response.stats.fallback_reason
        assert response.stats.draft_tokens > 0
    assert drafter.state.mask_registrations == 0


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", CROSS, ids=["tli", "slem", "slrs"])
async def test_sampled_output_follows_the_target_law(
    cross: CrossPair, target_tokenizer: Any, algorithm: int
) -> None:
    """Chi-square of the first two output tokens against the toy target's exact two-token law."""
    samples = 400
    config = SamplingConfig(temperature=1.0, top_k=6)
    prompt = "def fibonacci(n):\n    if"
    law = exact_law(cross.target_lm, config, 2, prompt=target_tokenizer(prompt)["input_ids"])

    accepted: list[int] = []

    async def one(seed: int) -> tuple[int, int]:
        response = await cross.stub.Generate(
            gen_request(
                prompt,
                algorithm,
                sampling=common_pb2.SamplingParams(temperature=1.0, top_k=6),
                seed=seed,
                lookahead=static(3),
                max_new_tokens=2,
                ignore_eos=True,
            )
        )
        assert response.stats.algorithm == algorithm
        accepted.append(response.stats.accepted_tokens)
        return response.token_ids[0], response.token_ids[1]

    outputs: list[tuple[int, ...]] = []
    for start in range(0, samples, 50):
        outputs.extend(await asyncio.gather(*(one(5000 + s) for s in range(start, start + 50))))
    assert sum(accepted) > samples // 10, sum(accepted)  # the drafter's proposals were used
    assert_law(outputs, law, alpha=1e-3)
