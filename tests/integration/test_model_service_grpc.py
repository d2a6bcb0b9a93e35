"""polyspec.v1.ModelService through the real gRPC stack, on tiny random models over loopback."""

from __future__ import annotations

import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from polyspec.v1 import common_pb2, model_pb2, model_pb2_grpc
from transformers import AutoTokenizer

from core.checksum import prefix_checksum
from core.errors import ErrorReason
from core.sampling import SamplingConfig, draft_token, score_candidates, sparse_to_dense
from core.serving.server import GrpcServerSettings
from core.serving.status import error_reason
from services.model.engine import EngineClocks
from services.model.identity import tokenizer_fingerprint
from services.model.server import SERVICE_NAME, ModelServer, start_model_server
from services.model.settings import ModelServiceSettings
from tests.support.tiny_models import (
    MAX_POSITIONS,
    build_word_model,
    build_word_tokenizer,
    load_reference,
    reference_logits,
)

CONTEXT = [3 + (7 * i) % 250 for i in range(20)]  # 20 in-vocabulary word tokens
LLAMA_BYTES_PER_TOKEN = 256  # 2 layers x (keys + values) x 2 kv heads x 8 dims x 4 bytes


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("model-service")
    return {
        "llama": build_word_model(root / "tiny-llama", "llama", seed=11, fim="starcoder"),
        "llama_qwen_fim": build_word_model(root / "tiny-llama-qwen-fim", "llama", seed=11, fim="qwen"),
        "bigcode_drafter": build_word_model(root / "tiny-bigcode-a", "gpt_bigcode", seed=12),
        "bigcode_target": build_word_model(root / "tiny-bigcode-b", "gpt_bigcode", seed=13),
    }


@pytest.fixture(scope="module")
def references(model_dirs: dict[str, Path]) -> dict[str, Any]:
    return {name: load_reference(path) for name, path in model_dirs.items()}


class FakeClock:
    """A monotonic clock moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Running:
    server: ModelServer
    channel: grpc.aio.Channel
    stub: model_pb2_grpc.ModelServiceStub


StartServer = Callable[..., Any]


@pytest.fixture
async def start(model_dirs: dict[str, Path]) -> AsyncIterator[StartServer]:
    """Starts model servers on 127.0.0.1:0; stops them all at teardown."""
    started: list[Running] = []

    async def _start(model: str = "llama", clock: FakeClock | None = None, **fields: Any) -> Running:
        settings = ModelServiceSettings(
            model_dir=model_dirs[model],
            grpc=GrpcServerSettings(host="127.0.0.1", port=0, shutdown_grace_seconds=0.5),
            **fields,
        )
        clocks = EngineClocks(clock=clock) if clock is not None else None
        server = await start_model_server(settings, clocks=clocks)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
        running = Running(server, channel, model_pb2_grpc.ModelServiceStub(channel))
        started.append(running)
        return running

    yield _start
    for running in started:
        await running.channel.close(grace=None)
        await running.server.stop(grace=0)


def ctx(sequence_id: str, tokens: list[int], held: list[int] | None = None, prefix_len: int = 0) -> Any:
    """A TokenContext: ``prefix_len`` tokens of ``held`` by reference, then ``tokens``."""
    checksum = prefix_checksum(held[:prefix_len]) if held is not None and prefix_len else 0
    return model_pb2.TokenContext(
        sequence_id=sequence_id,
        cached_prefix_len=prefix_len,
        cached_prefix_checksum=checksum,
        tokens=tokens,
    )


def sampling(temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> common_pb2.SamplingParams:
    return common_pb2.SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p)


def reference_score(
    model: Any,
    context: list[int],
    candidates: list[int],
    draft_probs: list[common_pb2.SparseDistribution] | None = None,
    *,
    config: SamplingConfig | None = None,
    seed: int,
) -> Any:
    """score_candidates over one full uncached forward of context + candidates."""
    logits = reference_logits(model, context + candidates, len(candidates) + 1)
    dense = None
    if draft_probs is not None:
        vocab = logits.shape[-1]
        dense = torch.cat(
            [
                sparse_to_dense(torch.tensor([list(d.token_ids)]), torch.tensor([list(d.probs)]), vocab)
                for d in draft_probs
            ]
        )
    generator = torch.Generator().manual_seed(seed)
    return score_candidates(logits, torch.tensor(candidates), dense, config or SamplingConfig(), generator)


def assert_score_equals(response: model_pb2.ScoreResponse, expected: Any, greedy: bool = False) -> None:
    assert list(response.target_samples) == expected.target_samples.tolist()
    if greedy:
        assert list(response.candidate_target_probs) == []
    else:
        assert list(response.candidate_target_probs) == pytest.approx(
            expected.candidate_target_probs.tolist(), rel=1e-4, abs=1e-6
        )
    recovered = [] if expected.recovered_tokens is None else expected.recovered_tokens.tolist()
    assert list(response.recovered_tokens) == recovered


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


# ---- Info ----------------------------------------------------------------------------------------


async def test_info_reports_identity_limits_and_tokenizer(start: StartServer, tmp_path: Path) -> None:
    running = await start()
    info = await running.stub.Info(model_pb2.InfoRequest())
    assert info.model_name == "tiny-llama"
    assert info.model_type == "llama"
    assert info.vocab_size == 262  # logits width: 256 tokenizer entries + 6 padding rows
    assert info.max_context_tokens == MAX_POSITIONS
    assert list(info.eos_token_ids) == [2]
    assert (info.dtype, info.device) == ("float32", "cpu")
    assert info.max_draft_tokens == 16
    assert info.emulated_forward_seconds == 0.0
    assert (info.tokenizer.fim.prefix, info.tokenizer.fim.suffix, info.tokenizer.fim.middle) == (
        "<fim_prefix>",
        "<fim_suffix>",
        "<fim_middle>",
    )
    assert "tokenizer.json" in info.tokenizer.files
    for name, data in info.tokenizer.files.items():
        (tmp_path / name).write_bytes(data)
    loaded = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    assert tokenizer_fingerprint(loaded) == info.tokenizer.fingerprint
    original = build_word_tokenizer("starcoder")
    text = "w5 w6 <fim_middle> <eos>"
    assert loaded.encode(text, add_special_tokens=False) == original.encode(text, add_special_tokens=False)


async def test_fingerprint_is_stable_and_fim_styles_are_detected(start: StartServer) -> None:
    first = await (await start()).stub.Info(model_pb2.InfoRequest())
    again = await (await start(model_name="renamed")).stub.Info(model_pb2.InfoRequest())
    qwen = await (await start("llama_qwen_fim")).stub.Info(model_pb2.InfoRequest())
    bigcode = await (await start("bigcode_target")).stub.Info(model_pb2.InfoRequest())
    assert again.model_name == "renamed"
    assert again.tokenizer.fingerprint == first.tokenizer.fingerprint
    assert len(first.tokenizer.fingerprint) == 64
    assert qwen.tokenizer.fingerprint != first.tokenizer.fingerprint
    assert qwen.tokenizer.fim.prefix == "<|fim_prefix|>"
    assert qwen.tokenizer.fim.middle == "<|fim_middle|>"
    assert not bigcode.tokenizer.HasField("fim")


# ---- Draft ---------------------------------------------------------------------------------------


async def test_draft_is_deterministic_by_seed_and_matches_reference(
    start: StartServer, references: dict[str, Any]
) -> None:
    running = await start()
    request = model_pb2.DraftRequest(
        context=ctx("a", CONTEXT), max_draft_tokens=4, sampling=sampling(top_k=40), seed=5, max_support=8
    )
    first = await running.stub.Draft(request)
    request.context.sequence_id = "b"
    second = await running.stub.Draft(request)
    assert list(first.draft_tokens) == list(second.draft_tokens)
    assert [list(d.probs) for d in first.draft_probs] == [list(d.probs) for d in second.draft_probs]
    assert first.stats.computed_tokens == len(CONTEXT) + 3
    assert first.stats.forwards == 4

    # The same draws from one uncached forward per step, with the pure sampling math.
    generator = torch.Generator().manual_seed(5)
    config = SamplingConfig(temperature=1.0, top_k=40)
    tokens = list(CONTEXT)
    for drafted, shipped in zip(first.draft_tokens, first.draft_probs, strict=True):
        expected = draft_token(reference_logits(references["llama"], tokens, 1)[0], config, 8, generator)
        assert drafted == expected.token
        assert list(shipped.token_ids) == expected.support_ids.tolist()
        assert list(shipped.probs) == pytest.approx(expected.support_probs.tolist(), rel=1e-4)
        assert 0 < len(shipped.token_ids) <= 8
        assert sum(shipped.probs) == pytest.approx(1.0, abs=1e-5)
        tokens.append(drafted)

    request.seed = 6
    request.context.sequence_id = "c"
    draws = {tuple((await running.stub.Draft(request)).draft_tokens)}
    for seed in range(7, 10):
        request.seed = seed
        draws.add(tuple((await running.stub.Draft(request)).draft_tokens))
    assert len(draws | {tuple(first.draft_tokens)}) > 1


async def test_greedy_draft_is_a_point_mass_and_stops_after_a_stop_token(
    start: StartServer, references: dict[str, Any]
) -> None:
    running = await start()
    greedy = model_pb2.DraftRequest(context=ctx("g", CONTEXT), max_draft_tokens=5, sampling=sampling(0.0))
    response = await running.stub.Draft(greedy)
    tokens = list(CONTEXT)
    for drafted, shipped in zip(response.draft_tokens, response.draft_probs, strict=True):
        assert drafted == int(reference_logits(references["llama"], tokens, 1)[0].argmax())
        assert (list(shipped.token_ids), list(shipped.probs)) == ([drafted], [1.0])
        tokens.append(drafted)
    assert len(response.draft_tokens) == 5

    stop = response.draft_tokens[1]
    greedy.stop_token_ids.append(stop)
    greedy.context.sequence_id = "h"
    stopped = await running.stub.Draft(greedy)
    first_stop = list(response.draft_tokens).index(stop)
    assert list(stopped.draft_tokens) == list(response.draft_tokens)[: first_stop + 1]

    greedy.ClearField("stop_token_ids")
    greedy.context.sequence_id = "i"
    greedy.confidence_threshold = 1.0  # every draft token has probability < 1: stop after the first
    assert len((await running.stub.Draft(greedy)).draft_tokens) == 1


# ---- Score ---------------------------------------------------------------------------------------


async def test_score_equals_one_uncached_forward_with_score_candidates(
    start: StartServer, references: dict[str, Any]
) -> None:
    running = await start()
    drafted = await running.stub.Draft(
        model_pb2.DraftRequest(context=ctx("d", CONTEXT), max_draft_tokens=4, sampling=sampling(), seed=1)
    )
    candidates = list(drafted.draft_tokens)
    draft_probs = list(drafted.draft_probs)
    for probs, config in ((draft_probs, SamplingConfig(0.8, 50, 0.9)), (None, SamplingConfig(1.0))):
        request = model_pb2.ScoreRequest(
            context=ctx("s", CONTEXT),
            candidate_tokens=candidates,
            draft_probs=probs or [],
            sampling=sampling(config.temperature, config.top_k, config.top_p),
            seed=99,
        )
        response = await running.stub.Score(request)
        expected = reference_score(references["llama"], CONTEXT, candidates, probs, config=config, seed=99)
        assert_score_equals(response, expected)
        assert len(response.target_samples) == len(candidates) + 1
    greedy = await running.stub.Score(
        model_pb2.ScoreRequest(context=ctx("t", CONTEXT), candidate_tokens=candidates, sampling=sampling(0.0))
    )
    expected = reference_score(references["llama"], CONTEXT, candidates, config=SamplingConfig(0.0), seed=0)
    assert_score_equals(greedy, expected, greedy=True)


async def test_score_without_candidates_gives_only_the_bonus_sample(
    start: StartServer, references: dict[str, Any]
) -> None:
    running = await start()
    response = await running.stub.Score(
        model_pb2.ScoreRequest(context=ctx("b", CONTEXT), sampling=sampling(), seed=3)
    )
    assert len(response.target_samples) == 1
    assert_score_equals(response, reference_score(references["llama"], CONTEXT, [], seed=3))


# ---- Cache reuse ---------------------------------------------------------------------------------


class FedTokens:
    """Counts the tokens the model really embeds (a forward hook on the input embeddings)."""

    def __init__(self, server: ModelServer) -> None:
        self.total = 0
        embeddings = server.engine.model.get_input_embeddings()
        self.handle = embeddings.register_forward_hook(self._hook)

    def _hook(self, module: Any, inputs: Any, output: Any) -> None:
        self.total += int(inputs[0].shape[-1])

    def take(self) -> int:
        total, self.total = self.total, 0
        return total


async def test_compute_is_proportional_to_new_tokens_and_rejections_crop(
    start: StartServer, references: dict[str, Any]
) -> None:
    running = await start()
    fed = FedTokens(running.server)
    candidates = [40, 41, 42, 43]
    first = await running.stub.Score(
        model_pb2.ScoreRequest(context=ctx("s", CONTEXT), candidate_tokens=candidates, sampling=sampling())
    )
    assert fed.take() == first.stats.computed_tokens == 24
    assert first.stats.reused_tokens == 0
    held = CONTEXT + candidates

    # All four accepted plus a bonus token, four new candidates: only 1 + 4 tokens are fed.
    accepted = [*held, 77]
    second = await running.stub.Score(
        model_pb2.ScoreRequest(
            context=ctx("s", [77], held, prefix_len=len(held)),
            candidate_tokens=[50, 51, 52, 53],
            sampling=sampling(),
            seed=4,
        )
    )
    assert fed.take() == second.stats.computed_tokens == 5
    assert second.stats.reused_tokens == len(held) == 24
    expected = reference_score(references["llama"], accepted, [50, 51, 52, 53], seed=4)
    assert_score_equals(second, expected)
    held = [*accepted, 50, 51, 52, 53]

    # Two accepted, then a recovered token: the cache is cropped back, 1 + 3 tokens are fed.
    committed = [*held[: len(accepted) + 2], 99]
    third = await running.stub.Score(
        model_pb2.ScoreRequest(
            context=ctx("s", [99], held, prefix_len=len(accepted) + 2),
            candidate_tokens=[60, 61, 62],
            sampling=sampling(),
            seed=5,
        )
    )
    assert fed.take() == third.stats.computed_tokens == 4
    assert third.stats.reused_tokens == len(committed) - 1
    expected = reference_score(references["llama"], committed, [60, 61, 62], seed=5)
    assert_score_equals(third, expected)
    fed.handle.remove()


async def test_a_fully_cached_context_refeeds_its_last_token(start: StartServer) -> None:
    running = await start()
    fed = FedTokens(running.server)
    request = model_pb2.ScoreRequest(context=ctx("s", CONTEXT), candidate_tokens=[5, 6], sampling=sampling())
    first = await running.stub.Score(request)
    fed.take()
    again = await running.stub.Score(request)
    assert fed.take() == again.stats.computed_tokens == 3  # last context token + 2 candidates
    assert again.stats.reused_tokens == len(CONTEXT) - 1
    assert list(again.target_samples) == list(first.target_samples)

    draft = model_pb2.DraftRequest(context=ctx("d", CONTEXT), max_draft_tokens=3, sampling=sampling(0.0))
    drafted = await running.stub.Draft(draft)
    fed.take()
    redrafted = await running.stub.Draft(draft)
    assert fed.take() == redrafted.stats.computed_tokens == 1 + 2
    assert list(redrafted.draft_tokens) == list(drafted.draft_tokens)
    fed.handle.remove()


async def test_draft_then_delta_context_feeds_only_the_unfed_tokens(start: StartServer) -> None:
    running = await start()
    fed = FedTokens(running.server)
    first = await running.stub.Draft(
        model_pb2.DraftRequest(context=ctx("d", CONTEXT), max_draft_tokens=4, sampling=sampling(0.0))
    )
    fed.take()
    held = CONTEXT + list(first.draft_tokens)
    # Every draft token accepted plus a bonus token: the last draft token and the bonus are new.
    second = await running.stub.Draft(
        model_pb2.DraftRequest(
            context=ctx("d", [7], held, prefix_len=len(held)), max_draft_tokens=2, sampling=sampling(0.0)
        )
    )
    assert fed.take() == second.stats.computed_tokens == 2 + 1
    assert second.stats.reused_tokens == len(held) - 1
    fed.handle.remove()


# ---- Context misses, eviction, budget, release ----------------------------------------------------


async def test_context_miss_is_failed_precondition_and_a_full_resend_gives_the_same_result(
    start: StartServer,
) -> None:
    running = await start()
    candidates = [11, 12, 13]

    def score_request(context: Any) -> model_pb2.ScoreRequest:
        return model_pb2.ScoreRequest(
            context=context, candidate_tokens=candidates, sampling=sampling(0.7), seed=21
        )

    unknown = await rpc_error(running.stub.Score(score_request(ctx("x", [5], CONTEXT, prefix_len=20))))
    assert unknown.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "cached_prefix_len = 0" in (unknown.details() or "")
    assert error_reason(unknown) is ErrorReason.CONTEXT_MISS  # what the coordinator reads

    await running.stub.Score(score_request(ctx("x", CONTEXT[:10])))
    wrong = ctx("x", [5], CONTEXT, prefix_len=10)
    wrong.cached_prefix_checksum ^= 1
    mismatch = await rpc_error(running.stub.Score(score_request(wrong)))
    assert mismatch.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error_reason(mismatch) is ErrorReason.CONTEXT_MISS
    too_long = await rpc_error(running.stub.Score(score_request(ctx("x", [5], CONTEXT, prefix_len=18))))
    assert too_long.code() == grpc.StatusCode.FAILED_PRECONDITION

    cached = await running.stub.Score(score_request(ctx("x", CONTEXT[10:], CONTEXT, prefix_len=10)))
    fresh_server = await start()
    resent = await fresh_server.stub.Score(score_request(ctx("x", CONTEXT)))
    assert list(resent.target_samples) == list(cached.target_samples)
    assert list(resent.candidate_target_probs) == pytest.approx(
        list(cached.candidate_target_probs), rel=1e-4, abs=1e-6
    )
    assert resent.stats.reused_tokens == 0
    assert cached.stats.reused_tokens == 10


async def test_lru_eviction_under_the_byte_budget(start: StartServer) -> None:
    # Three 40-token sequences with a budget for two and a half: the least recently used one goes.
    running = await start(cache_budget_bytes=100 * LLAMA_BYTES_PER_TOKEN)
    contexts = {
        name: [10 + i + offset for i in range(39)] for name, offset in (("a", 0), ("b", 50), ("c", 100))
    }
    for name in ("a", "b"):
        await running.stub.Score(
            model_pb2.ScoreRequest(context=ctx(name, contexts[name]), candidate_tokens=[5])
        )
    touch = contexts["a"] + [5]
    await running.stub.Score(
        model_pb2.ScoreRequest(context=ctx("a", [], touch, prefix_len=len(touch)), candidate_tokens=[6])
    )
    await running.stub.Score(model_pb2.ScoreRequest(context=ctx("c", contexts["c"]), candidate_tokens=[5]))

    held_b = contexts["b"] + [5]
    miss = await rpc_error(
        running.stub.Score(model_pb2.ScoreRequest(context=ctx("b", [1], held_b, prefix_len=len(held_b))))
    )
    assert miss.code() == grpc.StatusCode.FAILED_PRECONDITION
    held_a = [*touch, 6]
    hit = await running.stub.Score(
        model_pb2.ScoreRequest(context=ctx("a", [1], held_a, prefix_len=len(held_a)))
    )
    assert hit.stats.reused_tokens == len(held_a)
    assert running.server.engine.cache.total_bytes <= 100 * LLAMA_BYTES_PER_TOKEN
    evicted = running.server.metrics.registry.get_sample_value(
        "polyspec_model_cache_evictions_total", {"reason": "lru"}
    )
    assert evicted is not None and evicted >= 1


async def test_idle_sequences_expire_after_the_ttl(start: StartServer) -> None:
    clock = FakeClock()
    running = await start(clock=clock, cache_ttl_seconds=60)
    for name in ("old", "fresh"):
        await running.stub.Score(model_pb2.ScoreRequest(context=ctx(name, CONTEXT)))
    clock.now += 40
    await running.stub.Score(model_pb2.ScoreRequest(context=ctx("fresh", [1], CONTEXT, prefix_len=20)))
    clock.now += 30  # "old" idle for 70 s, "fresh" for 30 s
    hit = await running.stub.Score(
        model_pb2.ScoreRequest(context=ctx("fresh", [2], [*CONTEXT, 1], prefix_len=21))
    )
    assert hit.stats.reused_tokens == 21
    expired = await rpc_error(
        running.stub.Score(model_pb2.ScoreRequest(context=ctx("old", [1], CONTEXT, prefix_len=20)))
    )
    assert expired.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_sequence_over_the_budget_is_resource_exhausted(start: StartServer) -> None:
    running = await start(cache_budget_bytes=16 * LLAMA_BYTES_PER_TOKEN)
    error = await rpc_error(running.stub.Score(model_pb2.ScoreRequest(context=ctx("big", CONTEXT))))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    draft = model_pb2.DraftRequest(context=ctx("big", CONTEXT[:10]), max_draft_tokens=10)
    assert (await rpc_error(running.stub.Draft(draft))).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    small = await running.stub.Score(model_pb2.ScoreRequest(context=ctx("small", CONTEXT[:8])))
    assert len(small.target_samples) == 1


async def test_release_drops_sequences(start: StartServer) -> None:
    running = await start()
    await running.stub.Score(model_pb2.ScoreRequest(context=ctx("r", CONTEXT)))
    released = await running.stub.Release(model_pb2.ReleaseRequest(sequence_ids=["r", "never-seen"]))
    assert released.released == 1
    assert running.server.engine.cache.session_count == 0
    miss = await rpc_error(running.stub.Score(model_pb2.ScoreRequest(context=ctx("r", [1], CONTEXT, 20))))
    assert miss.code() == grpc.StatusCode.FAILED_PRECONDITION


# ---- Validation ----------------------------------------------------------------------------------


def _draft(**changes: Any) -> model_pb2.DraftRequest:
    request = model_pb2.DraftRequest(context=ctx("v", [4, 5, 6]), max_draft_tokens=2, sampling=sampling())
    for key, value in changes.items():
        if key == "context":
            request.context.CopyFrom(value)
        elif key == "sampling":
            request.sampling.CopyFrom(value)
        elif isinstance(value, list):
            getattr(request, key).extend(value)
        else:
            setattr(request, key, value)
    return request


def _score(**changes: Any) -> model_pb2.ScoreRequest:
    request = model_pb2.ScoreRequest(
        context=ctx("v", [4, 5, 6]), candidate_tokens=[7, 8], sampling=sampling()
    )
    for key, value in changes.items():
        if key == "context":
            request.context.CopyFrom(value)
        elif key == "sampling":
            request.sampling.CopyFrom(value)
        elif key == "candidate_tokens":
            request.ClearField("candidate_tokens")
            request.candidate_tokens.extend(value)
        else:
            getattr(request, key).extend(value)
    return request


def _dist(ids: list[int], probs: list[float]) -> common_pb2.SparseDistribution:
    return common_pb2.SparseDistribution(token_ids=ids, probs=probs)


INVALID_REQUESTS: list[tuple[str, Any, str]] = [
    ("Draft", _draft(context=ctx("", [1])), "context.sequence_id"),
    ("Draft", _draft(context=ctx("v", [1, 262])), "context.tokens[1]"),
    ("Draft", _draft(context=ctx("v", [-1])), "context.tokens[0]"),
    ("Draft", _draft(context=ctx("v", [1] * (MAX_POSITIONS + 1))), "context.tokens"),
    ("Draft", _draft(context=ctx("v", [1] * MAX_POSITIONS)), "context"),
    ("Draft", _draft(context=ctx("v", [])), "context.tokens"),
    ("Draft", _draft(max_draft_tokens=0), "max_draft_tokens"),
    ("Draft", _draft(max_draft_tokens=17), "max_draft_tokens"),
    ("Draft", _draft(sampling=sampling(temperature=-0.5)), "sampling.temperature"),
    ("Draft", _draft(sampling=sampling(temperature=float("nan"))), "sampling.temperature"),
    ("Draft", _draft(sampling=sampling(temperature=1e-4)), "sampling.temperature"),
    ("Draft", _draft(sampling=common_pb2.SamplingParams(top_k=-1)), "sampling.top_k"),
    ("Draft", _draft(sampling=sampling(top_p=0.0)), "sampling.top_p"),
    ("Draft", _draft(sampling=sampling(top_p=1.5)), "sampling.top_p"),
    ("Draft", _draft(stop_token_ids=[999]), "stop_token_ids[0]"),
    ("Draft", _draft(confidence_threshold=1.5), "confidence_threshold"),
    ("Draft", _draft(max_support=-1), "max_support"),
    ("Score", _score(candidate_tokens=[7, 300]), "candidate_tokens[1]"),
    ("Score", _score(candidate_tokens=[1] * MAX_POSITIONS), "candidate_tokens"),
    ("Score", _score(draft_probs=[_dist([7], [1.0])]), "draft_probs"),
    ("Score", _score(draft_probs=[_dist([7], [1.0]), _dist([8, 9], [1.0])]), "draft_probs[1]"),
    ("Score", _score(draft_probs=[_dist([7], [1.0]), _dist([400], [1.0])]), "draft_probs[1].token_ids[0]"),
    ("Score", _score(draft_probs=[_dist([7, 9], [1.2, -0.2]), _dist([8], [1.0])]), "draft_probs[0].probs[1]"),
    ("Score", _score(draft_probs=[_dist([7, 9], [0.5, 0.4]), _dist([8], [1.0])]), "draft_probs[0].probs"),
    (
        "Score",
        _score(draft_probs=[_dist([8], [1.0]), _dist([9, 8, 9], [0.25, 0.5, 0.25])]),
        "draft_probs[1].token_ids[2]",
    ),
    ("Score", _score(sampling=sampling(top_p=-1.0)), "sampling.top_p"),
    ("Score", _score(sampling=sampling(temperature=1e-4)), "sampling.temperature"),
    ("Score", _score(sampling=sampling(temperature=float("inf"))), "sampling.temperature"),
    ("Score", _score(sampling=common_pb2.SamplingParams(top_k=-3)), "sampling.top_k"),
    ("Release", model_pb2.ReleaseRequest(sequence_ids=["a", ""]), "sequence_ids[1]"),
]


async def test_each_invalid_field_is_invalid_argument_naming_it(start: StartServer) -> None:
    running = await start()
    for method, request, field in INVALID_REQUESTS:
        error = await rpc_error(getattr(running.stub, method)(request))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, field, error.details())
        assert (error.details() or "").startswith(f"{field}:"), (method, field, error.details())
        assert error_reason(error) is ErrorReason.INVALID_ARGUMENT, (method, field)
    # Unset optional sampling fields mean 1.0; a valid request still works afterwards.
    response = await running.stub.Score(_score(sampling=common_pb2.SamplingParams()))
    assert len(response.target_samples) == 3


# ---- Furniture: health, reflection, metrics, benchmarking flag ------------------------------------


async def test_health_is_serving_then_not_serving_on_stop(start: StartServer) -> None:
    running = await start()
    health = health_pb2_grpc.HealthStub(running.channel)
    watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
    first = await watch.read()
    assert first.status == health_pb2.HealthCheckResponse.SERVING
    check = await health.Check(health_pb2.HealthCheckRequest(service=""))
    assert check.status == health_pb2.HealthCheckResponse.SERVING
    await running.server.stop(grace=0.2)
    second = await watch.read()
    assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING
    watch.cancel()


async def test_reflection_lists_the_model_service(start: StartServer) -> None:
    running = await start()
    stub = reflection_pb2_grpc.ServerReflectionStub(running.channel)

    async def requests() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names = set()
    async for response in stub.ServerReflectionInfo(requests()):
        names |= {service.name for service in response.list_services_response.service}
    assert "polyspec.v1.ModelService" in names
    assert "grpc.health.v1.Health" in names


async def test_metrics_endpoint_and_emulated_latency_flag(start: StartServer) -> None:
    running = await start(metrics_port=0, emulated_forward_seconds=0.001)
    info = await running.stub.Info(model_pb2.InfoRequest())
    assert info.emulated_forward_seconds == pytest.approx(0.001)
    response = await running.stub.Score(model_pb2.ScoreRequest(context=ctx("m", CONTEXT[:5])))
    assert response.stats.emulated_latency
    await rpc_error(running.stub.Score(model_pb2.ScoreRequest(context=ctx("m2", [1], CONTEXT, 5))))
    assert running.server.metrics_port is not None
    url = f"http://127.0.0.1:{running.server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as page:
        text = page.read().decode()
    assert "polyspec_model_forwards_total 1.0" in text
    assert "polyspec_model_computed_tokens_total 5.0" in text
    assert "polyspec_model_context_misses_total 1.0" in text
    assert 'polyspec_model_request_seconds_count{method="Score"} 2.0' in text
    assert "polyspec_model_emulated_forward_seconds 0.001" in text
    assert "polyspec_model_cache_sessions 1.0" in text


# ---- gpt_bigcode as drafter and target -------------------------------------------------------------


async def test_gpt_bigcode_serves_as_drafter_and_target(
    start: StartServer, references: dict[str, Any]
) -> None:
    drafter = await start("bigcode_drafter")
    target = await start("bigcode_target")
    infos = [await s.stub.Info(model_pb2.InfoRequest()) for s in (drafter, target)]
    assert {i.model_type for i in infos} == {"gpt_bigcode"}
    assert infos[0].tokenizer.fingerprint == infos[1].tokenizer.fingerprint

    context = list(CONTEXT)
    held: list[int] = []  # what both servers hold for the sequence after the last round
    valid = 0  # how many of the held tokens are still part of the committed context
    config = SamplingConfig(0.9, 0, 0.95)
    for round_index in range(3):
        context_ref = ctx("seq", context[valid:], held, valid)
        drafted = await drafter.stub.Draft(
            model_pb2.DraftRequest(
                context=context_ref, max_draft_tokens=4, sampling=sampling(0.9, 0, 0.95), seed=round_index
            )
        )
        scored = await target.stub.Score(
            model_pb2.ScoreRequest(
                context=context_ref,
                candidate_tokens=drafted.draft_tokens,
                draft_probs=drafted.draft_probs,
                sampling=sampling(0.9, 0, 0.95),
                seed=100 + round_index,
            )
        )
        candidates = list(drafted.draft_tokens)
        assert len(candidates) == 4
        expected = reference_score(
            references["bigcode_target"],
            context,
            candidates,
            list(drafted.draft_probs),
            config=config,
            seed=100 + round_index,
        )
        assert_score_equals(scored, expected)
        if round_index > 0:
            assert scored.stats.reused_tokens == valid
        # Commit two accepted tokens and the recovered token at the third position.
        held = context + candidates
        valid = len(context) + 2
        context = [*context, *candidates[:2], scored.recovered_tokens[2]]
