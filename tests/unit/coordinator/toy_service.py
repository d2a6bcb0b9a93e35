"""A toy ModelService for coordinator tests: a next-token table LM behind the real wire protocol.

The toy follows the protocol of ``polyspec.v1.ModelService`` exactly as the real model service does
(context deltas with checksums, context misses, Draft and Score draws from the shared sampling math in
``core.sampling``), but its "model" is an explicit table, so tests can compute the
target's exact output law, run in milliseconds and inject failures (unavailable, evicted caches).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import grpc
import torch
from polyspec.v1 import model_pb2, model_pb2_grpc

from core.checksum import prefix_checksum
from core.errors import (
    ContextMissError,
    InvalidArgumentError,
    PolyspecError,
    UnavailableError,
    UnknownTokenMaskError,
)
from core.modelcalls import EngineInfo, FimTokens
from core.sampling import SamplingConfig, draft_token, score_candidates, sparse_to_dense
from core.serving.server import GrpcServerSettings, RunningServer, start_server
from services.model.wire import info_response

WORDS = (
    "<unk>",
    "<bos>",
    "<eos>",
    "<fim_prefix>",
    "<fim_suffix>",
    "<fim_middle>",
    "user",
    "assistant",
    "system",
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "end",
)
UNK, BOS, EOS = 0, 1, 2
END = WORDS.index("end")
VOCAB = len(WORDS)
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}assistant{% endif %}"
)


def build_toy_tokenizer(*, fim: bool = True, chat: bool = True, words: Sequence[str] = WORDS) -> Any:
    """A word-level fast tokenizer over ``words`` that puts <bos> in front of every text."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {word: index for index, word in enumerate(words) if fim or not word.startswith("<fim")}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )
    if chat:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tokenizer_files(tokenizer: Any) -> dict[str, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        return {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}


def fingerprint(tokenizer: Any) -> str:
    canonical = json.dumps(
        json.loads(tokenizer.backend_tokenizer.to_str()), sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class ToyLM(Protocol):
    """What a toy service runs: next-token logits over ``vocab_size`` ids."""

    @property
    def vocab_size(self) -> int: ...

    def logits(self, context: Sequence[int]) -> torch.Tensor: ...


@dataclass
class TableLM:
    """Next-token logits as a function of the last two tokens: a seeded random table.

    ``end`` is always followed by a likely EOS; EOS is otherwise unlikely. ``noise`` perturbs the
    table with another seed (a drafter that partly agrees with the target built from ``seed``).
    """

    seed: int
    scale: float = 2.5
    noise: float = 0.0
    noise_seed: int = 1

    def __post_init__(self) -> None:
        generator = torch.Generator().manual_seed(self.seed)
        table = torch.randn(VOCAB * VOCAB, VOCAB, generator=generator, dtype=torch.float64) * self.scale
        if self.noise:
            noise_gen = torch.Generator().manual_seed(self.noise_seed)
            table += torch.randn(table.shape, generator=noise_gen, dtype=torch.float64) * self.noise
        table[:, : UNK + 2] = -math.inf  # never <unk>, <bos>
        table[:, 3:6] = -math.inf  # never FIM tokens
        table[:, EOS] = -4.0
        for previous in range(VOCAB):
            table[previous * VOCAB + END, EOS] = 6.0
        self.table = table

    @property
    def vocab_size(self) -> int:
        return VOCAB

    def logits(self, context: Sequence[int]) -> torch.Tensor:  # [vocab]
        previous = context[-2] if len(context) >= 2 else BOS
        return self.table[previous * VOCAB + context[-1]].clone()

    def probs(self, context: Sequence[int], config: SamplingConfig) -> torch.Tensor:  # [vocab]
        from core.sampling import warp_probs

        return warp_probs(self.logits(context).unsqueeze(0), config)[0]


@dataclass
class ToyState:
    """What tests inspect and steer."""

    held: dict[str, list[int]] = field(default_factory=dict)
    calls: list[tuple[str, str, int, int]] = field(default_factory=list)  # (method, seq, cached, sent)
    contexts: list[list[int]] = field(default_factory=list)  # whole context of each Draft/Score call
    fail_next: list[PolyspecError] = field(default_factory=list)
    fail_always: PolyspecError | None = None
    released: list[str] = field(default_factory=list)
    masks: dict[str, frozenset[int]] = field(default_factory=dict)  # SetTokenMask registrations
    mask_registrations: int = 0  # SetTokenMask calls
    mask_misses: int = 0  # Drafts that named a mask not held
    draft_requests: list[Any] = field(default_factory=list)  # every DraftRequest received
    held_after: list[list[int]] = field(default_factory=list)  # context + draft tokens after each Draft
    score_forwards: int = 0
    delay_seconds: float = 0.0  # added to every Draft and Score
    evict_every_call: bool = False  # drop the sequence before each Draft/Score (every delta misses)


def _sampling(params: Any) -> SamplingConfig:
    return SamplingConfig(
        temperature=params.temperature if params.HasField("temperature") else 1.0,
        top_k=params.top_k,
        top_p=params.top_p if params.HasField("top_p") else 1.0,
    )


class ToyModelServicer(model_pb2_grpc.ModelServiceServicer):
    def __init__(
        self,
        lm: ToyLM,
        tokenizer: Any,
        *,
        model_name: str,
        eos_token_ids: Sequence[int] = (EOS,),
        max_context_tokens: int = 512,
        max_draft_tokens: int = 16,
        max_support: int = 8,
        emulated_forward_seconds: float = 0.0,
        advertise_fim: bool = True,
    ) -> None:
        self.lm = lm
        self.state = ToyState()
        self.max_context_tokens = max_context_tokens
        self.max_draft_tokens = max_draft_tokens
        self.max_support = max_support
        fim = None
        if advertise_fim and "<fim_prefix>" in tokenizer.get_vocab():
            fim = FimTokens(prefix="<fim_prefix>", suffix="<fim_suffix>", middle="<fim_middle>")
        self.engine_info = EngineInfo(
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
        )
        self.info = info_response(self.engine_info)

    async def _before_call(self) -> None:
        self._maybe_fail()
        if self.state.delay_seconds:
            await asyncio.sleep(self.state.delay_seconds)

    def _maybe_fail(self) -> None:
        if self.state.fail_always is not None:
            raise self.state.fail_always
        if self.state.fail_next:
            raise self.state.fail_next.pop(0)

    def _context(self, method: str, context: model_pb2.TokenContext) -> list[int]:
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

    async def Info(self, request: Any, context: Any) -> model_pb2.InfoResponse:  # noqa: N802
        self._maybe_fail()
        return self.info

    async def Draft(self, request: Any, context: Any) -> model_pb2.DraftResponse:  # noqa: N802
        await self._before_call()
        self.state.draft_requests.append(request)
        allowed = None
        if request.token_mask_id:  # checked before the cache is touched, as the real service does
            if request.token_mask_id not in self.state.masks:
                self.state.mask_misses += 1
                raise UnknownTokenMaskError(
                    f"token_mask_id {request.token_mask_id!r} is not registered on this server; "
                    "register it with SetTokenMask and retry"
                )
            allowed = torch.tensor(sorted(self.state.masks[request.token_mask_id]), dtype=torch.int64)
        tokens = self._context("Draft", request.context)
        if len(tokens) >= self.max_context_tokens:
            raise InvalidArgumentError("context", "no room")
        count = min(request.max_draft_tokens, self.max_context_tokens - len(tokens))
        config = _sampling(request.sampling)
        generator = torch.Generator().manual_seed(request.seed)
        response = model_pb2.DraftResponse()
        sequence = list(tokens)
        while True:
            logits = self.lm.logits(sequence)
            if allowed is not None:
                logits = torch.full_like(logits, -math.inf).index_copy(0, allowed, logits[allowed])
                if not bool(torch.isfinite(logits).any()):
                    break  # no mass on the mask: no (further) draft tokens
            drafted = draft_token(logits, config, request.max_support or self.max_support, generator)
            response.draft_tokens.append(drafted.token)
            response.draft_probs.add(
                token_ids=[int(t) for t in drafted.support_ids.tolist()],
                probs=[float(p) for p in drafted.support_probs.tolist()],
            )
            sequence.append(drafted.token)
            low = request.confidence_threshold > 0 and drafted.confidence < request.confidence_threshold
            if drafted.token in request.stop_token_ids or low or len(response.draft_tokens) == count:
                break
        response.stats.forwards = len(response.draft_tokens)
        self.state.held[request.context.sequence_id] = sequence
        self.state.held_after.append(list(sequence))
        return response

    async def Score(self, request: Any, context: Any) -> model_pb2.ScoreResponse:  # noqa: N802
        await self._before_call()
        tokens = self._context("Score", request.context)
        candidates = list(request.candidate_tokens)
        if len(tokens) + len(candidates) > self.max_context_tokens:
            raise InvalidArgumentError("candidate_tokens", "exceed the context")
        sequence = tokens + candidates
        logits = torch.stack(
            [self.lm.logits(sequence[: len(tokens) + i]) for i in range(len(candidates) + 1)]
        )
        config = _sampling(request.sampling)
        draft_probs = None
        if request.draft_probs:
            draft_probs = torch.cat(
                [
                    sparse_to_dense(
                        torch.tensor([list(d.token_ids)]),
                        torch.tensor([list(d.probs)], dtype=torch.float64),
                        self.lm.vocab_size,
                    )
                    for d in request.draft_probs
                ]
            )
        result = score_candidates(
            logits,
            torch.tensor(candidates, dtype=torch.int64),
            draft_probs,
            config,
            torch.Generator().manual_seed(request.seed),
        )
        self.state.held[request.context.sequence_id] = sequence
        self.state.score_forwards += 1
        response = model_pb2.ScoreResponse(
            target_samples=[int(t) for t in result.target_samples.tolist()],
            recovered_tokens=[] if result.recovered_tokens is None else result.recovered_tokens.tolist(),
        )
        if not config.is_greedy:
            response.candidate_target_probs.extend(float(p) for p in result.candidate_target_probs.tolist())
        response.stats.forwards = 1
        response.stats.computed_tokens = len(request.context.tokens) + len(candidates)
        return response

    async def SetTokenMask(self, request: Any, context: Any) -> model_pb2.SetTokenMaskResponse:  # noqa: N802
        bitmap = request.allowed_bitmap
        size = min(self.lm.vocab_size, len(bitmap) * 8)
        allowed = frozenset(i for i in range(size) if bitmap[i // 8] >> (i % 8) & 1)
        self.state.masks[request.mask_id] = allowed
        self.state.mask_registrations += 1
        return model_pb2.SetTokenMaskResponse(allowed_tokens=len(allowed))

    async def Release(self, request: Any, context: Any) -> model_pb2.ReleaseResponse:  # noqa: N802
        released = 0
        for sequence_id in request.sequence_ids:
            self.state.released.append(sequence_id)
            released += self.state.held.pop(sequence_id, None) is not None
        return model_pb2.ReleaseResponse(released=released)


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

    async def stop(self) -> None:
        await self.running.stop(0)


async def start_toy_server(servicer: ToyModelServicer) -> ToyServer:
    def register(server: grpc.aio.Server) -> None:
        model_pb2_grpc.add_ModelServiceServicer_to_server(servicer, server)

    running = await start_server(
        GrpcServerSettings(port=0, shutdown_grace_seconds=0.0), [register], ["polyspec.v1.ModelService"]
    )
    return ToyServer(servicer, running)


def unavailable(message: str = "toy replica is down") -> UnavailableError:
    return UnavailableError(message)
