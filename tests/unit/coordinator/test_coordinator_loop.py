"""The generation loop through a real coordinator server over toy model services (real gRPC, loopback).

The toy services' "models" are explicit tables (``tests.support.toy_lm.word_lm``), so greedy outputs can
be compared token for token and the sampled output law can be compared with the exact target law.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import grpc
import pytest
from polyspec.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc

from coordinator.server import CoordinatorServer
from core.errors import UnavailableError
from core.sampling import SamplingConfig
from tests.support.laws import assert_law, exact_law
from tests.support.toy_lm import word_lm
from tests.support.toy_service import ToyServer
from tests.support.toy_tokenizers import BOS, EOS, WORDS, word_level_toy
from tests.unit.coordinator.conftest import TARGET_SEED, coordinator_settings

StartToy = Callable[..., Awaitable[ToyServer]]
StartCoord = Callable[..., Awaitable[CoordinatorServer]]
Stub: TypeAlias = "coordinator_pb2_grpc.CoordinatorServiceAsyncStub"  # type-check-only class

AR, SD = common_pb2.ALGORITHM_AR, common_pb2.ALGORITHM_SD
GREEDY = common_pb2.SamplingParams(temperature=0.0)
PROMPTS = [
    "alpha",
    "beta gamma",
    "delta delta delta",
    "epsilon zeta eta theta iota",
    "kappa lambda mu nu xi",
    "xi xi alpha beta gamma delta epsilon",
    "user assistant system",
    "mu",
]


def static(k: int) -> coordinator_pb2.Lookahead:
    return coordinator_pb2.Lookahead(policy=coordinator_pb2.LOOKAHEAD_POLICY_STATIC, k=k)


def gen_request(prompt: str = "alpha beta", **fields: Any) -> coordinator_pb2.GenerateRequest:
    fields.setdefault("max_new_tokens", 24)
    return coordinator_pb2.GenerateRequest(prompt=prompt, **fields)


@pytest.fixture
async def pair(
    start_toy: StartToy, start_coord: StartCoord, channels: Any
) -> tuple[Stub, ToyServer, ToyServer]:
    """A coordinator over a toy target and a noisy toy drafter (same tokenizer, frequent rejections)."""
    target = await start_toy(word_lm(TARGET_SEED), model_name="toy-target")
    drafter = await start_toy(word_lm(TARGET_SEED, noise=2.5), model_name="toy-drafter")
    coordinator = await start_coord(coordinator_settings(target.address, drafter.address))
    return channels(coordinator.port), target, drafter


async def test_greedy_sd_equals_ar_token_for_token(pair: tuple[Stub, ToyServer, ToyServer]) -> None:
    stub, _, _ = pair
    accepted = drafted = 0
    for prompt, k in itertools.product(PROMPTS, (1, 3, 7)):
        ar = await stub.Generate(gen_request(prompt, sampling=GREEDY, algorithm=AR, ignore_eos=True))
        sd = await stub.Generate(
            gen_request(prompt, sampling=GREEDY, algorithm=SD, lookahead=static(k), ignore_eos=True)
        )
        assert list(sd.token_ids) == list(ar.token_ids), (prompt, k)
        assert sd.text == ar.text
        assert sd.stats.algorithm == SD and sd.stats.lookahead == f"static:{k}"
        assert ar.stats.target_forwards == ar.stats.rounds == len(ar.token_ids) == 24
        assert sd.stats.rounds == sd.stats.target_forwards <= 24
        assert sd.stats.output_tokens == 24
        # each service's precision as its Info says (the toy services compute in float64)
        assert (sd.stats.drafter_dtype, sd.stats.target_dtype) == ("float64", "float64")
        assert (ar.stats.drafter_dtype, ar.stats.target_dtype) == ("", "float64")
        accepted += sd.stats.accepted_tokens
        drafted += sd.stats.draft_tokens
    assert 0 < accepted < drafted  # the noisy drafter is accepted sometimes, rejected sometimes


async def test_a_drafter_equal_to_the_target_is_always_accepted(
    start_toy: StartToy, start_coord: StartCoord, channels: Any
) -> None:
    target = await start_toy(word_lm(TARGET_SEED))
    coordinator = await start_coord(coordinator_settings(target.address, target.address))
    stub = channels(coordinator.port)
    # top_k 8 fits the drafter's support cap (8), so the shipped draft distribution is the target's own.
    for temperature in (0.0, 1.0):
        response = await stub.Generate(
            gen_request(
                "alpha beta",
                sampling=common_pb2.SamplingParams(temperature=temperature, top_k=8),
                algorithm=SD,
                lookahead=static(4),
                ignore_eos=True,
                seed=3,
            )
        )
        assert response.stats.acceptance_rate == 1.0
        assert response.stats.draft_tokens == response.stats.accepted_tokens > 0
        assert response.stats.rounds == math.ceil(24 / 5)


async def test_eos_inside_accepted_tokens_truncates(pair: tuple[Stub, ToyServer, ToyServer]) -> None:
    stub, _, _ = pair
    # "end" is followed by EOS: a prompt ending in "end" makes the very next token EOS.
    for algorithm in (AR, SD):
        response = await stub.Generate(gen_request("alpha end", sampling=GREEDY, algorithm=algorithm))
        assert list(response.token_ids) == [EOS]
        assert response.finish_reason == coordinator_pb2.FINISH_REASON_STOP
        assert response.text == ""
    ar = await stub.Generate(gen_request("alpha end", sampling=GREEDY, algorithm=AR, ignore_eos=True))
    assert ar.token_ids[0] == EOS and len(ar.token_ids) == 24
    assert ar.finish_reason == coordinator_pb2.FINISH_REASON_LENGTH
    assert "<eos>" in ar.text


async def test_eos_inside_a_draft(start_toy: StartToy, start_coord: StartCoord, channels: Any) -> None:
    target = await start_toy(word_lm(TARGET_SEED))
    drafter = await start_toy(word_lm(TARGET_SEED, noise=0.5))
    coordinator = await start_coord(coordinator_settings(target.address, drafter.address))
    stub = channels(coordinator.port)
    found = 0
    for prompt in PROMPTS:
        ar = await stub.Generate(gen_request(prompt, sampling=GREEDY, algorithm=AR, max_new_tokens=64))
        sd = await stub.Generate(
            gen_request(prompt, sampling=GREEDY, algorithm=SD, lookahead=static(8), max_new_tokens=64)
        )
        assert list(sd.token_ids) == list(ar.token_ids)
        if sd.finish_reason == coordinator_pb2.FINISH_REASON_STOP:
            found += 1
            assert sd.token_ids[-1] == EOS and EOS not in sd.token_ids[:-1]
    drafts = [c for c in drafter.state.contexts if c]
    assert found > 0 and drafts


@pytest.mark.parametrize("max_new_tokens", [1, 2, 3])
@pytest.mark.parametrize("k", [1, 5, 16])
async def test_max_new_tokens_boundaries(
    pair: tuple[Stub, ToyServer, ToyServer], max_new_tokens: int, k: int
) -> None:
    stub, _, drafter = pair
    ar = await stub.Generate(
        gen_request("kappa", sampling=GREEDY, algorithm=AR, max_new_tokens=max_new_tokens, ignore_eos=True)
    )
    sd = await stub.Generate(
        gen_request(
            "kappa",
            sampling=GREEDY,
            algorithm=SD,
            lookahead=static(k),
            max_new_tokens=max_new_tokens,
            ignore_eos=True,
        )
    )
    assert list(sd.token_ids) == list(ar.token_ids)
    assert len(sd.token_ids) == max_new_tokens
    assert sd.finish_reason == coordinator_pb2.FINISH_REASON_LENGTH
    # Never more draft tokens than can still be output after the bonus token.
    assert sd.stats.draft_tokens <= max(0, max_new_tokens - 1) * sd.stats.rounds
    if max_new_tokens == 1:
        assert sd.stats.draft_tokens == 0 and not drafter.state.calls


async def test_context_window_finishes_with_context(
    start_toy: StartToy, start_coord: StartCoord, channels: Any
) -> None:
    target = await start_toy(word_lm(TARGET_SEED), max_context_tokens=12)
    drafter = await start_toy(word_lm(TARGET_SEED, noise=1.0), max_context_tokens=10)
    coordinator = await start_coord(coordinator_settings(target.address, drafter.address))
    stub = channels(coordinator.port)
    ar = await stub.Generate(gen_request("alpha beta", sampling=GREEDY, algorithm=AR, ignore_eos=True))
    sd = await stub.Generate(
        gen_request("alpha beta", sampling=GREEDY, algorithm=SD, lookahead=static(6), ignore_eos=True)
    )
    for response in (ar, sd):
        assert response.finish_reason == coordinator_pb2.FINISH_REASON_CONTEXT
        assert response.stats.prompt_tokens + response.stats.output_tokens == 12
    assert list(sd.token_ids) == list(ar.token_ids)
    assert "context window is full" in sd.stats.fallback_reason  # the drafter's smaller window ran out
    too_long = gen_request(" ".join(["alpha"] * 12), sampling=GREEDY)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(too_long)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(info.value.details()).startswith("prompt: is 13 tokens long")


async def test_same_seed_same_output_and_different_seeds_differ(
    pair: tuple[Stub, ToyServer, ToyServer],
) -> None:
    stub, _, _ = pair
    sampling = common_pb2.SamplingParams(temperature=1.0, top_p=0.95)
    outputs: dict[int, list[int]] = {}
    for seed in range(6):
        request = gen_request(
            "alpha", sampling=sampling, algorithm=SD, lookahead=static(3), seed=seed, ignore_eos=True
        )
        first, again = await stub.Generate(request), await stub.Generate(request)
        assert list(first.token_ids) == list(again.token_ids)
        assert first.stats.seed == seed
        outputs[seed] = list(first.token_ids)
    assert len({tuple(o) for o in outputs.values()}) == len(outputs)
    # Reproducible for a fixed lookahead (auto adapts k to measured timings, which changes the draws).
    unseeded = await stub.Generate(gen_request("alpha", sampling=sampling, algorithm=SD, lookahead=static(3)))
    replay = await stub.Generate(
        gen_request("alpha", sampling=sampling, algorithm=SD, lookahead=static(3), seed=unseeded.stats.seed)
    )
    assert list(replay.token_ids) == list(unseeded.token_ids)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"), [(1.0, 4, 1.0), (0.7, 6, 0.8)], ids=["t1-topk4", "t07-topk6-topp08"]
)
async def test_sampled_output_follows_the_target_law(
    pair: tuple[Stub, ToyServer, ToyServer], temperature: float, top_k: int, top_p: float
) -> None:
    """Chi-square of the first two output tokens of sd against the exact two-token law of the toy target."""
    stub, _, _ = pair
    samples = 500
    config = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p)
    sampling = common_pb2.SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)
    prompt = "gamma delta"
    prompt_ids = [BOS, WORDS.index("gamma"), WORDS.index("delta")]
    law = exact_law(word_lm(TARGET_SEED), config, 2, prompt=prompt_ids)

    async def one(seed: int) -> tuple[int, int]:
        response = await stub.Generate(
            gen_request(
                prompt,
                sampling=sampling,
                algorithm=SD,
                lookahead=static(2),
                seed=seed,
                max_new_tokens=2,
                ignore_eos=True,
            )
        )
        return response.token_ids[0], response.token_ids[1]

    outputs: list[tuple[int, ...]] = []
    for start in range(0, samples, 50):
        outputs.extend(await asyncio.gather(*(one(1000 + s) for s in range(start, start + 50))))
    assert_law(outputs, law, alpha=1e-3)


async def test_drafter_down_from_the_start_falls_back(
    start_toy: StartToy, start_coord: StartCoord, channels: Any
) -> None:
    target = await start_toy(word_lm(TARGET_SEED))
    drafter = await start_toy(word_lm(TARGET_SEED, noise=1.0))
    coordinator = await start_coord(coordinator_settings(target.address, drafter.address))
    stub = channels(coordinator.port)
    ar = await stub.Generate(gen_request(sampling=GREEDY, algorithm=AR))
    await drafter.stop()
    for algorithm in (SD, common_pb2.ALGORITHM_AUTO):
        sd = await stub.Generate(gen_request(sampling=GREEDY, algorithm=algorithm, lookahead=static(4)))
        assert list(sd.token_ids) == list(ar.token_ids)
        assert sd.stats.algorithm == SD
        assert f"drafter at {drafter.address} is unavailable" in sd.stats.fallback_reason
        assert "target-only decoding from round 0" in sd.stats.fallback_reason
        assert sd.stats.draft_tokens == 0 and sd.stats.rounds == len(sd.token_ids)


async def test_drafter_failure_mid_request_keeps_the_output(pair: tuple[Stub, ToyServer, ToyServer]) -> None:
    stub, _, drafter = pair
    ar = await stub.Generate(gen_request(sampling=GREEDY, algorithm=AR))
    drafter.state.evict_every_call = True  # every delta misses and is resent whole: not a failure
    first = await stub.Generate(gen_request(sampling=GREEDY, algorithm=SD, lookahead=static(2)))
    assert first.stats.fallback_reason == ""
    assert any(cached > 0 for _, _, cached, _ in drafter.state.calls)
    assert sum(cached == 0 for _, _, cached, _ in drafter.state.calls) > 1
    drafter.state.evict_every_call = False
    calls_before = len(drafter.state.calls)

    async def fail_later() -> None:
        while len(drafter.state.calls) < calls_before + 2:
            await asyncio.sleep(0.001)
        drafter.state.fail_always = UnavailableError("drafter crashed")

    failing = asyncio.ensure_future(fail_later())
    drafter.state.delay_seconds = 0.01
    sd = await stub.Generate(gen_request(sampling=GREEDY, algorithm=SD, lookahead=static(2)))
    await failing
    assert list(first.token_ids) == list(sd.token_ids) == list(ar.token_ids)
    assert "drafter crashed" in sd.stats.fallback_reason
    assert sd.stats.draft_tokens > 0  # some rounds drafted before the failure


async def test_target_replica_failure_redispatches(
    start_toy: StartToy, start_coord: StartCoord, channels: Any
) -> None:
    first, second = await start_toy(word_lm(TARGET_SEED)), await start_toy(word_lm(TARGET_SEED))
    drafter = await start_toy(word_lm(TARGET_SEED, noise=2.0))
    settings = coordinator_settings([first.address, second.address], drafter.address, call_retry_seconds=0.5)
    coordinator = await start_coord(settings)
    stub = channels(coordinator.port)
    baseline = await stub.Generate(gen_request(sampling=GREEDY, algorithm=SD, lookahead=static(3)))
    served = first if first.state.score_forwards else second
    other = second if served is first else first
    assert other.state.score_forwards == 0  # affinity: one replica served every round
    served.state.fail_next.extend([UnavailableError("replica restarting")] * 3)
    again = await stub.Generate(gen_request(sampling=GREEDY, algorithm=SD, lookahead=static(3)))
    assert list(again.token_ids) == list(baseline.token_ids)
    assert again.stats.fallback_reason == ""
    assert other.state.score_forwards > 0
    await first.stop()
    await second.stop()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(gen_request(sampling=GREEDY, algorithm=AR))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "target at 127.0.0.1:" in str(info.value.details())


async def test_deadline_exceeded_releases_the_caches(pair: tuple[Stub, ToyServer, ToyServer]) -> None:
    stub, target, drafter = pair
    target.state.delay_seconds = 0.05
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(
            gen_request(sampling=GREEDY, algorithm=SD, max_new_tokens=500, ignore_eos=True), timeout=0.5
        )
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await _until(lambda: not target.state.held and not drafter.state.held and bool(target.state.released))
    assert target.state.calls and drafter.state.calls


async def test_cancelled_stream_releases_the_caches(pair: tuple[Stub, ToyServer, ToyServer]) -> None:
    stub, target, drafter = pair
    target.state.delay_seconds = 0.02
    call = stub.GenerateStream(
        coordinator_pb2.GenerateStreamRequest(
            request=gen_request(sampling=GREEDY, algorithm=SD, max_new_tokens=500, ignore_eos=True)
        )
    )
    async for message in call:
        assert message.token_ids
        break
    call.cancel()  # type: ignore[no-untyped-call]
    await _until(lambda: not target.state.held and not drafter.state.held and bool(target.state.released))


async def test_stream_deltas_add_up_to_the_text(pair: tuple[Stub, ToyServer, ToyServer]) -> None:
    stub, _, _ = pair
    request = gen_request("alpha beta", sampling=GREEDY, algorithm=SD, lookahead=static(3), max_new_tokens=40)
    unary = await stub.Generate(request)
    messages = [m async for m in stub.GenerateStream(coordinator_pb2.GenerateStreamRequest(request=request))]
    assert "".join(m.text_delta for m in messages) == unary.text
    assert [t for m in messages for t in m.token_ids] == list(unary.token_ids)
    assert all(m.finish_reason == coordinator_pb2.FINISH_REASON_UNSPECIFIED for m in messages[:-1])
    last = messages[-1]
    assert last.finish_reason == unary.finish_reason
    assert last.stats.output_tokens == len(unary.token_ids)
    assert {m.request_id for m in messages} == {unary.request_id} or len(
        {m.request_id for m in messages}
    ) == 1


async def test_chat_and_fim_use_each_models_format(
    start_toy: StartToy, start_coord: StartCoord, channels: Any
) -> None:
    target = await start_toy(word_lm(TARGET_SEED))
    drafter = await start_toy(word_lm(TARGET_SEED, noise=1.0), advertise_fim=False)
    coordinator = await start_coord(coordinator_settings(target.address, drafter.address))
    stub = channels(coordinator.port)
    vocab = {w: i for i, w in enumerate(WORDS)}
    chat = coordinator_pb2.Chat(messages=[coordinator_pb2.ChatMessage(role="user", content="alpha beta")])
    response = await stub.Generate(
        coordinator_pb2.GenerateRequest(chat=chat, max_new_tokens=4, sampling=GREEDY, lookahead=static(2))
    )
    chat_ids = [vocab["user"], vocab["alpha"], vocab["beta"], vocab["assistant"]]
    assert target.state.contexts[0] == chat_ids and drafter.state.contexts[0] == chat_ids
    assert response.stats.prompt_tokens == 4
    target.state.contexts.clear()
    drafter.state.contexts.clear()
    fim = coordinator_pb2.FillInTheMiddle(prefix="alpha", suffix="beta gamma")
    response = await stub.Generate(
        coordinator_pb2.GenerateRequest(fim=fim, max_new_tokens=4, sampling=GREEDY, lookahead=static(2))
    )
    assert target.state.contexts[0] == [
        BOS,
        vocab["<fim_prefix>"],
        vocab["alpha"],
        vocab["<fim_suffix>"],
        vocab["beta"],
        vocab["gamma"],
        vocab["<fim_middle>"],
    ]
    assert drafter.state.contexts[0] == [BOS, vocab["alpha"]]  # no FIM tokens advertised: the prefix alone
    assert response.stats.algorithm == SD and response.stats.draft_tokens > 0


async def test_pairs_with_different_tokenizers(
    start_toy: StartToy, start_coord: StartCoord, channels: Any
) -> None:
    target = await start_toy(word_lm(TARGET_SEED), tokenizer=word_level_toy(fim=False))
    drafter = await start_toy(word_lm(TARGET_SEED))
    coordinator = await start_coord(coordinator_settings(target.address, drafter.address))
    stub = channels(coordinator.port)
    # Word-level toy tokenizers have no byte-level or SentencePiece decoder: they cannot be aligned.
    assert "cannot be aligned" in coordinator.services.pair.alignment_error
    auto = await stub.Generate(gen_request(sampling=GREEDY))
    assert auto.stats.algorithm == AR and not drafter.state.calls
    assert "cannot be aligned" in auto.stats.fallback_reason
    aligned = "needs the two vocabularies aligned, but the tokenizers cannot be aligned"
    cases = {
        SD: "algorithm: sd needs drafter and target with the same tokenizer",
        common_pb2.ALGORITHM_TLI: f"algorithm: tli {aligned}",
        common_pb2.ALGORITHM_SLEM: f"algorithm: slem {aligned}",
        common_pb2.ALGORITHM_SLRS: f"algorithm: slrs {aligned}",
    }
    for algorithm, message in cases.items():
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Generate(gen_request(algorithm=algorithm))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert str(info.value.details()).startswith(message)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(
            coordinator_pb2.GenerateRequest(fim=coordinator_pb2.FillInTheMiddle(prefix="a"), max_new_tokens=2)
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(info.value.details()).startswith("fim: the target model")


async def _until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Waits for a condition that another task makes true (bounded, so a bug fails instead of hanging)."""
    for _ in range(int(seconds / 0.01)):
        if condition():
            return
        await asyncio.sleep(0.01)
    assert condition()


async def test_stats_split_each_call_into_compute_and_call_time(
    pair: tuple[Stub, ToyServer, ToyServer],
) -> None:
    stub, target, drafter = pair
    target.state.report_compute = drafter.state.report_compute = True
    target.state.delay_seconds = 0.002  # outside the reported compute: the wire's share of a call
    sd = (await stub.Generate(gen_request(sampling=GREEDY, algorithm=SD, lookahead=static(3)))).stats
    assert sd.rounds > 0 and sd.drafter_forwards > 0
    assert 0 < sd.drafter_compute_seconds <= sd.drafter_call_seconds
    assert 0 < sd.target_compute_seconds < sd.target_call_seconds
    assert sd.target_call_seconds - sd.target_compute_seconds >= 0.002 * sd.target_forwards
    assert sd.drafter_call_seconds + sd.target_call_seconds <= sd.total_seconds  # SI: calls in sequence
    ar = (await stub.Generate(gen_request(sampling=GREEDY, algorithm=AR))).stats
    assert ar.drafter_compute_seconds == ar.drafter_call_seconds == 0.0
    assert 0 < ar.target_compute_seconds < ar.target_call_seconds <= ar.total_seconds
