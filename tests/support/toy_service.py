"""A toy model service: a toy LM behind the model service's calls, in process or over real gRPC.

``ToyModel`` serves Draft and Score on the domain types (``core.modelcalls``) the way the engine does:
context references with checksums and context misses, token masks, drafting by ``core.drafting`` (the
stop rule included) and scoring by ``core.sampling.score_candidates``; only the model is a table, so
tests know the target's exact law, run in milliseconds and can inject failures (unavailable replicas,
evicted caches, lost masks, delays). ``ToyModelServicer`` puts it behind ``polyspec.v1.ModelService``
with the model service's own wire adapter (``services.model.wire``); ``DirectCalls`` hands a round's two
calls straight to two toy models (``coordinator.loop.round.ModelCalls``, no gRPC).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import torch
from polyspec.v1 import model_pb2, model_pb2_grpc

from core.checksum import prefix_checksum
from core.drafting import DraftRule, draft_rows
from core.errors import ContextMissError, InvalidArgumentError, PolyspecError, UnknownTokenMaskError
from core.modelcalls import (
    ContextRef,
    DraftCall,
    DraftOutcome,
    EngineInfo,
    FimTokens,
    ForwardStats,
    ScoreCall,
    ScoreOutcome,
)
from core.sampling import score_candidates, sparse_to_dense
from core.serving.server import GrpcServerSettings, RunningServer, start_server
from services.model import wire
from services.model.classifiers import StopClassifierStore
from services.model.masks import mask_from_bitmap
from tests.support.toy_lm import ToyLM
from tests.support.toy_tokenizers import EOS, fingerprint, tokenizer_files

DEFAULT_MAX_SUPPORT = 8


@dataclass
class ToyState:
    """What tests inspect and steer."""

    held: dict[str, list[int]] = field(default_factory=dict)
    calls: list[tuple[str, str, int, int]] = field(default_factory=list)  # (method, seq, cached, sent)
    contexts: list[list[int]] = field(default_factory=list)  # whole context of each Draft/Score call
    fail_next: list[PolyspecError] = field(default_factory=list)
    fail_always: PolyspecError | None = None
    released: list[str] = field(default_factory=list)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)  # SetTokenMask registrations
    mask_registrations: int = 0  # SetTokenMask calls
    mask_misses: int = 0  # Drafts that named a mask not held
    draft_calls: list[DraftCall] = field(default_factory=list)  # every Draft received
    held_after: list[list[int]] = field(default_factory=list)  # context + draft tokens after each Draft
    score_forwards: int = 0
    delay_seconds: float = 0.0  # added to every Draft and Score
    hung: bool = False  # every call, Info included, waits while set (a stopped process)
    active: int = 0  # Draft and Score calls being served now
    max_active: int = 0  # the most served at once
    evict_every_call: bool = False  # drop the sequence before each Draft/Score (every delta misses)
    report_compute: bool = False  # report each Draft/Score's measured compute_seconds (as the engine does)


def toy_info(
    lm: ToyLM,
    tokenizer: Any,
    *,
    model_name: str,
    eos_token_ids: Sequence[int] = (EOS,),
    max_context_tokens: int = 512,
    max_draft_tokens: int = 16,
    emulated_forward_seconds: float = 0.0,
    advertise_fim: bool = True,
) -> EngineInfo:
    """What a toy service tells about itself (its tokenizer files included)."""
    fim = None
    if advertise_fim and "<fim_prefix>" in tokenizer.get_vocab():
        fim = FimTokens(prefix="<fim_prefix>", suffix="<fim_suffix>", middle="<fim_middle>")
    return EngineInfo(
        model_name=model_name,
        model_type="toy",
        vocab_size=lm.vocab_size,
        max_context_tokens=max_context_tokens,
        eos_token_ids=tuple(eos_token_ids),
        tokenizer_fingerprint=fingerprint(tokenizer),
        tokenizer_files=tokenizer_files(tokenizer),
        fim=fim,
        dtype="float64",
        device="cpu",
        emulated_forward_seconds=emulated_forward_seconds,
        max_draft_tokens=max_draft_tokens,
        model_fingerprint=f"toy-{model_name}",
    )


def bare_info(vocab_size: int, *, model_name: str = "toy", eos_token_ids: Sequence[int] = ()) -> EngineInfo:
    """What an in-process toy model needs to know about itself (no tokenizer shipped)."""
    return EngineInfo(
        model_name=model_name,
        model_type="toy",
        vocab_size=vocab_size,
        max_context_tokens=1 << 16,
        eos_token_ids=tuple(eos_token_ids),
        tokenizer_fingerprint="",
        tokenizer_files={},
        fim=None,
        dtype="float64",
        device="cpu",
        emulated_forward_seconds=0.0,
        max_draft_tokens=64,
    )


class ToyModel:
    """Draft, Score, SetTokenMask and Release over a toy LM, on domain types."""

    def __init__(self, lm: ToyLM, info: EngineInfo, *, max_support: int = DEFAULT_MAX_SUPPORT) -> None:
        self.lm = lm
        self.info = info
        self.max_support = max_support
        self.state = ToyState()
        self.stop_classifiers = StopClassifierStore(8)  # the model service's own store

    def _context(self, method: str, context: ContextRef) -> list[int]:
        if self.state.evict_every_call:
            self.state.held.pop(context.sequence_id, None)
        held = self.state.held.get(context.sequence_id, [])
        n = context.cached_prefix_len
        self.state.calls.append((method, context.sequence_id, n, len(context.tokens)))
        if n and (n > len(held) or prefix_checksum(held[:n]) != context.cached_prefix_checksum):
            raise ContextMissError(f"sequence {context.sequence_id}: prefix of {n} tokens not held")
        whole = held[:n] + list(context.tokens)
        self.state.contexts.append(whole)
        if not whole:
            raise InvalidArgumentError("context.tokens", "empty")
        return whole

    def draft(self, call: DraftCall) -> DraftOutcome:
        self.state.draft_calls.append(call)
        started = time.perf_counter()
        mask = None
        if call.token_mask_id:  # checked before the cache is touched, as the engine does
            mask = self.state.masks.get(call.token_mask_id)
            if mask is None:
                self.state.mask_misses += 1
                raise UnknownTokenMaskError(
                    f"token_mask_id {call.token_mask_id!r} is not registered on this server; "
                    "register it with SetTokenMask and retry"
                )
        classifier = None
        if call.stop_classifier_id:  # checked before the cache is touched, as the engine does
            classifier = self.stop_classifiers.get(call.stop_classifier_id)
        context = self._context("Draft", call.context)
        if len(context) >= self.info.max_context_tokens:
            raise InvalidArgumentError("context", "no room")
        count = min(call.max_draft_tokens, self.info.max_context_tokens - len(context))
        sequence = list(context)

        def advance(rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
            sequence.append(int(tokens[0]))
            return self.lm.logits(sequence).unsqueeze(0)

        drafts = draft_rows(
            self.lm.logits(sequence).unsqueeze(0),
            advance,
            DraftRule(
                count,
                call.stop_token_ids,
                call.confidence_threshold,
                stop_classifier=None
                if classifier is None
                else classifier.stop_rule(call.stop_classifier_threshold),
                keep_features=call.return_features,
            ),
            config=call.sampling,
            max_support=call.max_support or self.max_support,
            generator=torch.Generator().manual_seed(call.seed),
            mask=mask,
        )
        tokens, probs = drafts.row(0)
        held = [*context, *tokens]
        self.state.held[call.context.sequence_id] = held
        self.state.held_after.append(list(held))
        features = drafts.row_features(0) if call.return_features else ()
        stats = ForwardStats(forwards=len(tokens), compute_seconds=self._compute_seconds(started))
        return DraftOutcome(tokens, probs, stats, features)

    def _compute_seconds(self, started: float) -> float:
        return time.perf_counter() - started if self.state.report_compute else 0.0

    def score(self, call: ScoreCall) -> ScoreOutcome:
        started = time.perf_counter()
        tokens = self._context("Score", call.context)
        candidates = list(call.candidate_tokens)
        for index, token in enumerate(candidates):  # as the model service checks its requests
            if not 0 <= token < self.lm.vocab_size:
                raise InvalidArgumentError(
                    f"candidate_tokens[{index}]", f"token id {token} is outside the vocabulary"
                )
        if len(tokens) + len(candidates) > self.info.max_context_tokens:
            raise InvalidArgumentError("candidate_tokens", "exceed the context")
        sequence = tokens + candidates
        logits = torch.stack(
            [self.lm.logits(sequence[: len(tokens) + i]) for i in range(len(candidates) + 1)]
        )
        draft_probs = None
        if call.draft_probs is not None:
            rows = [
                sparse_to_dense(
                    torch.tensor([d.token_ids], dtype=torch.int64),
                    torch.tensor([d.probs], dtype=logits.dtype),
                    self.lm.vocab_size,
                )
                for d in call.draft_probs
            ]
            draft_probs = (
                torch.cat(rows) if rows else torch.zeros((0, self.lm.vocab_size), dtype=logits.dtype)
            )
        result = score_candidates(
            logits,
            torch.tensor(candidates, dtype=torch.int64),
            draft_probs,
            call.sampling,
            torch.Generator().manual_seed(call.seed),
        )
        self.state.held[call.context.sequence_id] = sequence
        self.state.score_forwards += 1
        recovered = result.recovered_tokens
        return ScoreOutcome(
            candidate_target_probs=()
            if call.sampling.is_greedy
            else tuple(result.candidate_target_probs.tolist()),
            target_samples=tuple(int(t) for t in result.target_samples.tolist()),
            recovered_tokens=() if recovered is None else tuple(int(t) for t in recovered.tolist()),
            stats=ForwardStats(
                forwards=1,
                computed_tokens=len(call.context.tokens) + len(candidates),
                compute_seconds=self._compute_seconds(started),
            ),
        )

    def set_token_mask(self, mask_id: str, bitmap: bytes) -> int:
        mask = mask_from_bitmap(
            bitmap[: (self.lm.vocab_size + 7) // 8], self.lm.vocab_size, torch.device("cpu")
        )
        self.state.masks[mask_id] = mask
        self.state.mask_registrations += 1
        return int(mask.sum())

    def release(self, sequence_ids: Sequence[str]) -> int:
        released = 0
        for sequence_id in sequence_ids:
            self.state.released.append(sequence_id)
            released += self.state.held.pop(sequence_id, None) is not None
        return released


class ToyModelServicer(model_pb2_grpc.ModelServiceServicer):
    """``polyspec.v1.ModelService`` over a ``ToyModel`` (the model service's wire adapter converts)."""

    def __init__(self, model: ToyModel) -> None:
        self.model = model

    @property
    def state(self) -> ToyState:
        return self.model.state

    async def _hang(self) -> None:
        while self.state.hung:
            await asyncio.sleep(0.01)

    async def _before_call(self) -> None:
        await self._hang()
        self._maybe_fail()
        if self.state.delay_seconds:
            await asyncio.sleep(self.state.delay_seconds)

    def _maybe_fail(self) -> None:
        if self.state.fail_always is not None:
            raise self.state.fail_always
        if self.state.fail_next:
            raise self.state.fail_next.pop(0)

    async def Info(self, request: Any, context: Any) -> model_pb2.InfoResponse:  # noqa: N802
        await self._hang()
        self._maybe_fail()
        return wire.info_response(self.model.info)

    async def Draft(self, request: Any, context: Any) -> model_pb2.DraftResponse:  # noqa: N802
        with self._active():
            await self._before_call()
            return wire.draft_response(self.model.draft(wire.draft_call(request)))

    async def Score(self, request: Any, context: Any) -> model_pb2.ScoreResponse:  # noqa: N802
        with self._active():
            await self._before_call()
            return wire.score_response(self.model.score(wire.score_call(request)))

    @contextlib.contextmanager
    def _active(self) -> Iterator[None]:
        self.state.active += 1
        self.state.max_active = max(self.state.max_active, self.state.active)
        try:
            yield
        finally:
            self.state.active -= 1

    async def SetTokenMask(self, request: Any, context: Any) -> model_pb2.SetTokenMaskResponse:  # noqa: N802
        allowed = self.model.set_token_mask(request.mask_id, request.allowed_bitmap)
        return model_pb2.SetTokenMaskResponse(allowed_tokens=allowed)

    async def SetStopClassifier(  # noqa: N802
        self, request: Any, context: Any
    ) -> model_pb2.SetStopClassifierResponse:
        registered = self.model.stop_classifiers.register(
            request.classifier_id, request.spec_json, request.weights
        )
        return model_pb2.SetStopClassifierResponse(parameters=registered.parameters)

    async def Release(self, request: Any, context: Any) -> model_pb2.ReleaseResponse:  # noqa: N802
        return model_pb2.ReleaseResponse(released=self.model.release(list(request.sequence_ids)))


@dataclass
class ToyServer:
    servicer: ToyModelServicer
    running: RunningServer

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.running.port}"

    @property
    def state(self) -> ToyState:
        return self.servicer.state

    @property
    def info(self) -> EngineInfo:
        return self.servicer.model.info

    async def stop(self) -> None:
        await self.running.stop(0)


async def start_toy_server(model: ToyModel, settings: GrpcServerSettings | None = None) -> ToyServer:
    """Serves ``model`` on loopback (``settings``: another transport, e.g. TLS; port 0 by default)."""
    servicer = ToyModelServicer(model)

    def register(server: grpc.aio.Server) -> None:
        model_pb2_grpc.add_ModelServiceServicer_to_server(servicer, server)

    settings = settings or GrpcServerSettings(port=0, shutdown_grace_seconds=0.0)
    running = await start_server(settings, [register], ["polyspec.v1.ModelService"])
    return ToyServer(servicer, running)


class DirectCalls:
    """A round's two calls handed straight to toy models (``coordinator.loop.round.ModelCalls``)."""

    def __init__(self, target: ToyModel, drafter: ToyModel | None = None) -> None:
        self.target, self.drafter = target, drafter

    async def draft(self, call: DraftCall) -> DraftOutcome:
        assert self.drafter is not None
        return self.drafter.draft(call)

    async def score(self, call: ScoreCall) -> ScoreOutcome:
        return self.target.score(call)
