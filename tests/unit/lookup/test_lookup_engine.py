"""The lookup engine and its service: the target's identity, context deltas, point-mass drafts, masks,
Score refused, budgets, idle expiry and the opt-in cross-request memory."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import grpc
import pytest
from polyspec.v1 import common_pb2, model_pb2, model_pb2_grpc

from core.checksum import prefix_checksum
from core.errors import (
    CallNotServedError,
    ContextMissError,
    ErrorReason,
    InvalidArgumentError,
    ResourceExhaustedError,
    UnknownTokenMaskError,
)
from core.modelcalls import ContextRef, DraftCall, ScoreCall
from core.sampling import SamplingConfig
from core.serving.server import GrpcServerSettings
from core.serving.status import error_reason
from services.lookup import cli
from services.lookup.engine import LookupEngine, target_info
from services.lookup.server import start_lookup_server
from services.lookup.settings import LookupKind, LookupServiceSettings
from services.model.engine import ModelEngine
from services.model.settings import ModelServiceSettings

REPEATS = [5, 6, 7, 8, 5, 6, 7, 8, 5, 6]
T1 = SamplingConfig(1.0)


def settings(target_dir: Path, kind: LookupKind = "ngram", **fields: Any) -> LookupServiceSettings:
    return LookupServiceSettings(kind=kind, target_model_dir=target_dir, **fields)


def draft_call(sequence_id: str, tokens: list[int], k: int = 4, **fields: Any) -> DraftCall:
    return DraftCall(ContextRef.whole(sequence_id, tokens), k, T1, seed=0, **fields)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_info_is_the_targets_identity(target_dir: Path) -> None:
    model = ModelEngine.load(ModelServiceSettings(model_dir=target_dir)).info
    info = target_info(settings(target_dir, "suffix"))
    assert info.tokenizer_fingerprint == model.tokenizer_fingerprint
    assert info.tokenizer_files == model.tokenizer_files
    assert (info.vocab_size, info.max_context_tokens) == (model.vocab_size, model.max_context_tokens)
    assert info.eos_token_ids == model.eos_token_ids
    assert (info.model_name, info.model_type, info.dtype) == ("suffix", "suffix", "none")


def test_drafts_are_point_masses_and_deltas_resolve_as_the_model_service(target_dir: Path) -> None:
    engine = LookupEngine.load(settings(target_dir))
    first = engine.draft(draft_call("s", REPEATS))
    assert first.draft_tokens == (7, 8, 5, 6)
    assert [(p.token_ids, p.probs) for p in first.draft_probs] == [((t,), (1.0,)) for t in first.draft_tokens]
    assert (first.stats.computed_tokens, first.stats.reused_tokens, first.stats.forwards) == (10, 0, 0)
    held = [*REPEATS, *first.draft_tokens]
    assert engine.sessions.held_tokens("s") == held
    # The next context: two drafts accepted, then another token, sent as a delta on the held prefix.
    context = [*REPEATS, 7, 8, 9]
    delta = ContextRef("s", 12, prefix_checksum(held[:12]), (9,))
    second = engine.draft(DraftCall(delta, 4, T1, seed=1))
    assert (second.stats.computed_tokens, second.stats.reused_tokens) == (3, 10)
    assert second.draft_tokens == (), "no earlier 9: nothing to propose"
    assert engine.sessions.held_tokens("s") == context
    with pytest.raises(ContextMissError):
        engine.draft(DraftCall(ContextRef("s", 12, prefix_checksum(held[:12]) ^ 1, (9,)), 4, T1, seed=2))
    with pytest.raises(ContextMissError):
        engine.draft(DraftCall(ContextRef("unknown", 3, 0, (9,)), 4, T1, seed=2))


def test_stop_tokens_masks_and_limits(target_dir: Path) -> None:
    engine = LookupEngine.load(settings(target_dir, "suffix", cache_budget_tokens=64))
    assert engine.draft(draft_call("a", REPEATS, stop_token_ids=frozenset({5}))).draft_tokens == (7, 8, 5)
    allowed = bytearray((engine.info.vocab_size + 7) // 8)
    for token in (7, 8):
        allowed[token // 8] |= 1 << (token % 8)
    engine.set_token_mask("m", bytes(allowed))
    assert engine.draft(draft_call("a", REPEATS, token_mask_id="m")).draft_tokens == (7, 8)
    with pytest.raises(UnknownTokenMaskError):
        engine.draft(draft_call("a", REPEATS, token_mask_id="gone"))
    with pytest.raises(ResourceExhaustedError):
        engine.draft(draft_call("long", [5] * 65))
    with pytest.raises(InvalidArgumentError, match="context"):
        engine.draft(draft_call("full", [5] * engine.info.max_context_tokens))
    with pytest.raises(CallNotServedError, match="Draft only"):
        engine.score(ScoreCall(ContextRef.whole("a", REPEATS), (), None, T1, seed=0))


def test_budget_ttl_and_release(target_dir: Path) -> None:
    clock = Clock()
    engine = LookupEngine(
        settings(target_dir, cache_budget_tokens=25, cache_ttl_seconds=10),
        target_info(settings(target_dir)),
        clock=clock,
    )
    engine.draft(draft_call("a", REPEATS))
    engine.draft(draft_call("b", REPEATS))
    engine.draft(draft_call("c", REPEATS))  # 30 tokens: the least recently used goes
    assert engine.sessions.held_tokens("a") is None and engine.sessions.total_tokens == 20
    clock.now = 8.0
    engine.draft(draft_call("c", [*REPEATS, 7]))
    clock.now = 15.0
    assert engine.expire_idle() == 1 and engine.sessions.held_tokens("b") is None
    assert engine.release(["c", "nothing"]) == 1 and engine.sessions.session_count == 0


def test_cross_request_memory_drafts_from_earlier_outputs(target_dir: Path) -> None:
    prompt, output = [4, 9], [10, 11, 12, 13, 14, 15]
    without = LookupEngine.load(settings(target_dir, "suffix", suffix_min_match=1))
    with_memory = LookupEngine.load(
        settings(target_dir, "suffix", suffix_min_match=1, cross_request_memory_tokens=100)
    )
    for engine in (without, with_memory):
        engine.draft(draft_call("first", prompt))
        engine.draft(draft_call("first", [*prompt, *output]))  # what the sequence generated meanwhile
        engine.release(["first"])
        proposed = engine.draft(draft_call("second", [3, 10, 11])).draft_tokens
        assert proposed == ((12, 13, 14, 15) if engine is with_memory else ())
    assert with_memory.memory is not None and list(with_memory.memory.outputs) == [tuple(output)], (
        "the memory keeps the generated tokens, not the prompt"
    )


async def test_the_service_drafts_and_refuses_score(target_dir: Path) -> None:
    grpc_settings = GrpcServerSettings(port=0, shutdown_grace_seconds=0.0)
    server = await start_lookup_server(settings(target_dir, grpc=grpc_settings))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = model_pb2_grpc.ModelServiceStub(channel)
            info = await stub.Info(model_pb2.InfoRequest(), timeout=10)
            assert (info.model_name, info.model_type, info.dtype) == ("ngram", "ngram", "none")
            context = model_pb2.TokenContext(sequence_id="s", tokens=REPEATS)
            sampling = common_pb2.SamplingParams(temperature=0.7)
            drafted = await stub.Draft(
                model_pb2.DraftRequest(context=context, max_draft_tokens=3, sampling=sampling), timeout=10
            )
            assert list(drafted.draft_tokens) == [7, 8, 5]
            assert [list(d.probs) for d in drafted.draft_probs] == [[1.0]] * 3
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Score(model_pb2.ScoreRequest(context=context, sampling=sampling), timeout=10)
            assert refused.value.code() is grpc.StatusCode.UNIMPLEMENTED
            assert error_reason(refused.value) is ErrorReason.CALL_NOT_SERVED
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await stub.Draft(model_pb2.DraftRequest(context=context, max_draft_tokens=0), timeout=10)
            assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert "max_draft_tokens" in str(bad.value.details())
    finally:
        await server.stop(0)


def test_cli_flags_set_the_settings(target_dir: Path) -> None:
    parser = argparse.ArgumentParser(prog="polyspec serve")
    cli.register_serve(parser.add_subparsers(dest="role", required=True))
    argv = [
        "drafter",
        "--kind",
        "suffix",
        "--target-model",
        str(target_dir),
        "--name",
        "lookup",
        "--port",
        "0",
    ]
    argv += ["--suffix-depth", "12", "--suffix-min-match", "3", "--suffix-min-score", "0.2"]
    argv += ["--cross-request-memory", "5000", "--max-draft-tokens", "8", "--cache-budget-tokens", "999"]
    argv += ["--cache-ttl-seconds", "30", "--max-queue", "5", "--max-token-masks", "3"]
    argv += ["--ngram-min", "1", "--ngram-max", "6", "--metrics-port", "0"]
    parsed = LookupServiceSettings.model_validate(cli.settings_fields(parser.parse_args(argv)))
    assert parsed.model_dump(exclude={"grpc", "target_model_dir"}) == {
        "kind": "suffix",
        "model_name": "lookup",
        "ngram_min": 1,
        "ngram_max": 6,
        "suffix_depth": 12,
        "suffix_min_match": 3,
        "suffix_min_score": 0.2,
        "cross_request_memory_tokens": 5000,
        "max_draft_tokens": 8,
        "cache_budget_tokens": 999,
        "cache_ttl_seconds": 30.0,
        "max_queue": 5,
        "max_token_masks": 3,
        "metrics_host": "127.0.0.1",
        "metrics_port": 0,
    }
    with pytest.raises(ValueError, match="needs kind suffix"):
        settings(target_dir, "ngram", cross_request_memory_tokens=10)
