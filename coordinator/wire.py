"""polyspec.v1 <-> the coordinator's domain types: the one place the coordinator converts protobuf.

- Generate (inbound): a ``GenerateRequest`` becomes validated ``GenerationParams``; every bad field raises
  ``InvalidArgumentError`` naming the field. A request's statistics and finish reason become the
  response's messages.
- Model-service calls (outbound): ``DraftCall`` / ``ScoreCall`` become ``DraftRequest`` / ``ScoreRequest``,
  and the answers become ``DraftOutcome`` / ``ScoreOutcome`` / ``EngineInfo`` (``core.modelcalls``, the
  types the model service's engine works on too).
"""

from __future__ import annotations

import math
import uuid

from polyspec.v1 import common_pb2, coordinator_pb2, model_pb2

from coordinator.config import CoordinatorSettings
from coordinator.request import (
    AlgorithmName,
    ChatInput,
    ChatTurn,
    FimInput,
    FinishReason,
    GenerationParams,
    LookaheadKind,
    LookaheadRequest,
    PromptInput,
    RequestStats,
    SchedulerName,
    TextInput,
    prompt_bytes,
)
from core.errors import InvalidArgumentError
from core.modelcalls import (
    ContextRef,
    DraftCall,
    DraftOutcome,
    EngineInfo,
    FimTokens,
    ForwardStats,
    ScoreCall,
    ScoreOutcome,
    SparseProbs,
)
from core.sampling import SamplingConfig

MAX_REQUEST_ID_CHARS = 128

_ALGORITHM_FROM_PROTO: dict[int, AlgorithmName] = {
    common_pb2.ALGORITHM_UNSPECIFIED: AlgorithmName.AUTO,
    common_pb2.ALGORITHM_AUTO: AlgorithmName.AUTO,
    common_pb2.ALGORITHM_AR: AlgorithmName.AR,
    common_pb2.ALGORITHM_SD: AlgorithmName.SD,
    common_pb2.ALGORITHM_SLEM: AlgorithmName.SLEM,
    common_pb2.ALGORITHM_SLRS: AlgorithmName.SLRS,
    common_pb2.ALGORITHM_TLI: AlgorithmName.TLI,
}
_ALGORITHM_TO_PROTO: dict[AlgorithmName, common_pb2.Algorithm.ValueType] = {
    AlgorithmName.AUTO: common_pb2.ALGORITHM_AUTO,
    AlgorithmName.AR: common_pb2.ALGORITHM_AR,
    AlgorithmName.SD: common_pb2.ALGORITHM_SD,
    AlgorithmName.SLEM: common_pb2.ALGORITHM_SLEM,
    AlgorithmName.SLRS: common_pb2.ALGORITHM_SLRS,
    AlgorithmName.TLI: common_pb2.ALGORITHM_TLI,
}
_LOOKAHEAD_FROM_PROTO: dict[int, LookaheadKind] = {
    coordinator_pb2.LOOKAHEAD_POLICY_UNSPECIFIED: LookaheadKind.AUTO,
    coordinator_pb2.LOOKAHEAD_POLICY_AUTO: LookaheadKind.AUTO,
    coordinator_pb2.LOOKAHEAD_POLICY_STATIC: LookaheadKind.STATIC,
    coordinator_pb2.LOOKAHEAD_POLICY_CONFIDENCE: LookaheadKind.CONFIDENCE,
    coordinator_pb2.LOOKAHEAD_POLICY_DISCO: LookaheadKind.DISCO,
}
_SCHEDULER_FROM_PROTO: dict[int, SchedulerName | None] = {
    coordinator_pb2.SCHEDULER_UNSPECIFIED: None,  # the coordinator's default
    coordinator_pb2.SCHEDULER_SI: SchedulerName.SI,
    coordinator_pb2.SCHEDULER_DSI: SchedulerName.DSI,
    coordinator_pb2.SCHEDULER_AUTO: SchedulerName.AUTO,
}
_SCHEDULER_TO_PROTO: dict[SchedulerName, coordinator_pb2.Scheduler.ValueType] = {
    SchedulerName.SI: coordinator_pb2.SCHEDULER_SI,
    SchedulerName.DSI: coordinator_pb2.SCHEDULER_DSI,
    SchedulerName.AUTO: coordinator_pb2.SCHEDULER_AUTO,
}
FINISH_REASONS: dict[FinishReason, coordinator_pb2.FinishReason.ValueType] = {
    FinishReason.LENGTH: coordinator_pb2.FINISH_REASON_LENGTH,
    FinishReason.STOP: coordinator_pb2.FINISH_REASON_STOP,
    FinishReason.CONTEXT: coordinator_pb2.FINISH_REASON_CONTEXT,
}


# --- Generate: request in, statistics out ---------------------------------------------------------------


def params_from_proto(
    request: coordinator_pb2.GenerateRequest, settings: CoordinatorSettings
) -> GenerationParams:
    """Validates a GenerateRequest against the coordinator's limits."""
    return GenerationParams(
        input=_bounded(_input(request), settings.max_prompt_bytes),
        max_new_tokens=_max_new_tokens(request.max_new_tokens, settings.max_new_tokens_cap),
        sampling=_sampling(request.sampling),
        seed=request.seed if request.HasField("seed") else None,
        algorithm=_algorithm(request.algorithm),
        lookahead=_lookahead(request.lookahead, settings.max_lookahead_k),
        ignore_eos=request.ignore_eos,
        request_id=_request_id(request.request_id),
        scheduler=_scheduler(request.scheduler),
    )


def _input(request: coordinator_pb2.GenerateRequest) -> PromptInput:
    which = request.WhichOneof("input")
    if which == "prompt":
        if not request.prompt:
            raise InvalidArgumentError("prompt", "must not be empty")
        return TextInput(request.prompt)
    if which == "chat":
        return _chat(request.chat)
    if which == "fim":
        return FimInput(prefix=request.fim.prefix, suffix=request.fim.suffix)
    raise InvalidArgumentError("input", "set one of prompt, chat or fim")


_INPUT_FIELDS: dict[type, str] = {TextInput: "prompt", ChatInput: "chat.messages", FimInput: "fim"}


def _bounded(prompt: PromptInput, cap: int) -> PromptInput:
    """``prompt`` if its UTF-8 size is within ``cap`` bytes (checked before anything tokenizes it)."""
    size = prompt_bytes(prompt)
    if size > cap:
        raise InvalidArgumentError(
            _INPUT_FIELDS[type(prompt)], f"is {size} bytes (UTF-8); this coordinator takes at most {cap}"
        )
    return prompt


def _chat(chat: coordinator_pb2.Chat) -> ChatInput:
    if not chat.messages:
        raise InvalidArgumentError("chat.messages", "must not be empty")
    for index, message in enumerate(chat.messages):
        if not message.role:
            raise InvalidArgumentError(f"chat.messages[{index}].role", "must not be empty")
    return ChatInput(tuple(ChatTurn(m.role, m.content) for m in chat.messages))


def _max_new_tokens(value: int, cap: int) -> int:
    if value < 1:
        raise InvalidArgumentError("max_new_tokens", f"must be >= 1, got {value}")
    if value > cap:
        raise InvalidArgumentError("max_new_tokens", f"must be <= {cap} (the coordinator's cap), got {value}")
    return value


def _sampling(sampling: common_pb2.SamplingParams) -> SamplingConfig:
    temperature = sampling.temperature if sampling.HasField("temperature") else 1.0
    top_p = sampling.top_p if sampling.HasField("top_p") else 1.0
    return SamplingConfig(temperature=temperature, top_k=sampling.top_k, top_p=top_p)  # validates


def _algorithm(value: int) -> AlgorithmName:
    try:
        return _ALGORITHM_FROM_PROTO[value]
    except KeyError:
        raise InvalidArgumentError("algorithm", f"unknown value {value}") from None


def _scheduler(value: int) -> SchedulerName | None:
    try:
        return _SCHEDULER_FROM_PROTO[value]
    except KeyError:
        raise InvalidArgumentError("scheduler", f"unknown value {value}") from None


def scheduler_to_proto(scheduler: SchedulerName) -> coordinator_pb2.Scheduler.ValueType:
    return _SCHEDULER_TO_PROTO[scheduler]


def algorithm_to_proto(algorithm: AlgorithmName) -> common_pb2.Algorithm.ValueType:
    return _ALGORITHM_TO_PROTO[algorithm]


def _lookahead(lookahead: coordinator_pb2.Lookahead, max_k: int) -> LookaheadRequest:
    try:
        kind = _LOOKAHEAD_FROM_PROTO[lookahead.policy]
    except KeyError:
        raise InvalidArgumentError("lookahead.policy", f"unknown value {lookahead.policy}") from None
    if lookahead.k != 0 and not 1 <= lookahead.k <= max_k:
        raise InvalidArgumentError(
            "lookahead.k", f"must lie in [1, {max_k}] (0 = default), got {lookahead.k}"
        )
    threshold = lookahead.confidence_threshold
    if math.isnan(threshold) or not 0 <= threshold < 1:
        raise InvalidArgumentError(
            "lookahead.confidence_threshold", f"must lie in [0, 1) (0 = default), got {threshold}"
        )
    return LookaheadRequest(
        kind=kind,
        k=lookahead.k or None,
        confidence_threshold=threshold or None,
    )


def _request_id(value: str) -> str:
    if not value:
        return uuid.uuid4().hex
    if len(value) > MAX_REQUEST_ID_CHARS or not value.isprintable():
        raise InvalidArgumentError(
            "request_id", f"must be at most {MAX_REQUEST_ID_CHARS} printable characters"
        )
    return value


def stats_message(stats: RequestStats) -> coordinator_pb2.GenerationStats:
    """The wire form of a request's statistics."""
    return coordinator_pb2.GenerationStats(
        algorithm=algorithm_to_proto(stats.algorithm),
        lookahead=stats.lookahead,
        prompt_tokens=stats.prompt_tokens,
        output_tokens=stats.output_tokens,
        draft_tokens=stats.draft_tokens,
        accepted_tokens=stats.accepted_tokens,
        acceptance_rate=stats.acceptance_rate,
        target_forwards=stats.target_forwards,
        drafter_forwards=stats.drafter_forwards,
        rounds=stats.rounds,
        time_to_first_token_seconds=stats.time_to_first_token_seconds,
        total_seconds=stats.total_seconds,
        tokens_per_second=stats.tokens_per_second,
        bytes_sent=stats.bytes_sent,
        bytes_received=stats.bytes_received,
        emulated_latency=stats.emulated_latency,
        fallback_reason=stats.fallback_reason,
        seed=stats.seed,
        near_tie_positions=stats.near_tie_positions,
        drafter_dtype=stats.drafter_dtype,
        target_dtype=stats.target_dtype,
        scheduler=scheduler_to_proto(stats.scheduler),
        target_replicas_used=stats.target_replicas_used,
        verifications_preempted=stats.verifications_preempted,
        target_tokens_per_output_token=stats.target_tokens_per_output_token,
        call_queue_seconds=stats.call_queue_seconds,
        drafter_compute_seconds=stats.drafter_compute_seconds,
        target_compute_seconds=stats.target_compute_seconds,
        drafter_call_seconds=stats.drafter_call_seconds,
        target_call_seconds=stats.target_call_seconds,
    )


# --- Model-service calls: domain calls out, answers in --------------------------------------------------


def sampling_message(config: SamplingConfig) -> common_pb2.SamplingParams:
    """The wire form of the request's warpers (every field explicit)."""
    return common_pb2.SamplingParams(temperature=config.temperature, top_k=config.top_k, top_p=config.top_p)


def token_context(context: ContextRef) -> model_pb2.TokenContext:
    return model_pb2.TokenContext(
        sequence_id=context.sequence_id,
        cached_prefix_len=context.cached_prefix_len,
        cached_prefix_checksum=context.cached_prefix_checksum,
        tokens=context.tokens,
    )


def _distribution(probs: SparseProbs) -> common_pb2.SparseDistribution:
    return common_pb2.SparseDistribution(token_ids=probs.token_ids, probs=probs.probs)


def _sparse_probs(distribution: common_pb2.SparseDistribution) -> SparseProbs:
    return SparseProbs(tuple(distribution.token_ids), tuple(distribution.probs))


def draft_request(call: DraftCall) -> model_pb2.DraftRequest:
    return model_pb2.DraftRequest(
        context=token_context(call.context),
        max_draft_tokens=call.max_draft_tokens,
        sampling=sampling_message(call.sampling),
        seed=call.seed,
        stop_token_ids=sorted(call.stop_token_ids),
        confidence_threshold=call.confidence_threshold,
        max_support=call.max_support,
        token_mask_id=call.token_mask_id,
        stop_classifier_id=call.stop_classifier_id,
        stop_classifier_threshold=call.stop_classifier_threshold,
        return_features=call.return_features,
    )


def score_request(call: ScoreCall) -> model_pb2.ScoreRequest:
    return model_pb2.ScoreRequest(
        context=token_context(call.context),
        candidate_tokens=call.candidate_tokens,
        draft_probs=[] if call.draft_probs is None else [_distribution(d) for d in call.draft_probs],
        sampling=sampling_message(call.sampling),
        seed=call.seed,
    )


def forward_stats(stats: model_pb2.ForwardStats) -> ForwardStats:
    return ForwardStats(
        computed_tokens=stats.computed_tokens,
        reused_tokens=stats.reused_tokens,
        forwards=stats.forwards,
        compute_seconds=stats.compute_seconds,
        emulated_latency=stats.emulated_latency,
        emulated_overruns=stats.emulated_overruns,
    )


def draft_outcome(response: model_pb2.DraftResponse) -> DraftOutcome:
    return DraftOutcome(
        draft_tokens=tuple(response.draft_tokens),
        draft_probs=tuple(_sparse_probs(d) for d in response.draft_probs),
        stats=forward_stats(response.stats),
        features=tuple(tuple(f.values) for f in response.features),
    )


def score_outcome(response: model_pb2.ScoreResponse) -> ScoreOutcome:
    return ScoreOutcome(
        candidate_target_probs=tuple(response.candidate_target_probs),
        target_samples=tuple(response.target_samples),
        recovered_tokens=tuple(response.recovered_tokens),
        stats=forward_stats(response.stats),
        top2_logit_margins=tuple(response.top2_logit_margins),
    )


def engine_info(response: model_pb2.InfoResponse) -> EngineInfo:
    tokenizer = response.tokenizer
    fim = None
    if tokenizer.HasField("fim"):
        fim = FimTokens(prefix=tokenizer.fim.prefix, suffix=tokenizer.fim.suffix, middle=tokenizer.fim.middle)
    return EngineInfo(
        model_name=response.model_name,
        model_type=response.model_type,
        vocab_size=response.vocab_size,
        max_context_tokens=response.max_context_tokens,
        eos_token_ids=tuple(response.eos_token_ids),
        tokenizer_fingerprint=tokenizer.fingerprint,
        tokenizer_files=dict(tokenizer.files),
        fim=fim,
        dtype=response.dtype,
        device=response.device,
        emulated_forward_seconds=response.emulated_forward_seconds,
        max_draft_tokens=response.max_draft_tokens,
        max_queue=response.max_queue,
        model_fingerprint=response.model_fingerprint,
    )
