"""polyspec.v1 <-> the model service's domain types: the one place the model service converts protobuf."""

from __future__ import annotations

from polyspec.v1 import common_pb2, model_pb2

from core.modelcalls import (
    ContextRef,
    DraftCall,
    DraftOutcome,
    EngineInfo,
    ForwardStats,
    ScoreCall,
    ScoreOutcome,
    SparseProbs,
)
from core.sampling import SamplingConfig


def sampling_config(params: common_pb2.SamplingParams) -> SamplingConfig:
    """Warpers of a request; unset temperature / top_p mean 1.0.

    ``SamplingConfig`` validates them: bad values raise ``InvalidArgumentError`` naming the field
    (``sampling.top_p: must lie in (0, 1] ...``).
    """
    return SamplingConfig(
        temperature=params.temperature if params.HasField("temperature") else 1.0,
        top_k=params.top_k,
        top_p=params.top_p if params.HasField("top_p") else 1.0,
    )


def context_ref(context: model_pb2.TokenContext) -> ContextRef:
    return ContextRef(
        sequence_id=context.sequence_id,
        cached_prefix_len=context.cached_prefix_len,
        cached_prefix_checksum=context.cached_prefix_checksum,
        tokens=tuple(context.tokens),
    )


def sparse_probs(distribution: common_pb2.SparseDistribution) -> SparseProbs:
    return SparseProbs(tuple(distribution.token_ids), tuple(distribution.probs))


def draft_call(request: model_pb2.DraftRequest) -> DraftCall:
    return DraftCall(
        context=context_ref(request.context),
        max_draft_tokens=request.max_draft_tokens,
        sampling=sampling_config(request.sampling),
        seed=request.seed,
        stop_token_ids=frozenset(request.stop_token_ids),
        confidence_threshold=request.confidence_threshold,
        max_support=request.max_support,
        token_mask_id=request.token_mask_id,
        stop_classifier_id=request.stop_classifier_id,
        stop_classifier_threshold=request.stop_classifier_threshold,
        return_features=request.return_features,
    )


def score_call(request: model_pb2.ScoreRequest) -> ScoreCall:
    draft_probs = tuple(sparse_probs(d) for d in request.draft_probs) if request.draft_probs else None
    return ScoreCall(
        context=context_ref(request.context),
        candidate_tokens=tuple(request.candidate_tokens),
        draft_probs=draft_probs,
        sampling=sampling_config(request.sampling),
        seed=request.seed,
    )


def stats_message(stats: ForwardStats) -> model_pb2.ForwardStats:
    return model_pb2.ForwardStats(
        computed_tokens=stats.computed_tokens,
        reused_tokens=stats.reused_tokens,
        forwards=stats.forwards,
        compute_seconds=stats.compute_seconds,
        emulated_latency=stats.emulated_latency,
        emulated_overruns=stats.emulated_overruns,
    )


def draft_response(outcome: DraftOutcome) -> model_pb2.DraftResponse:
    return model_pb2.DraftResponse(
        draft_tokens=outcome.draft_tokens,
        draft_probs=[
            common_pb2.SparseDistribution(token_ids=d.token_ids, probs=d.probs) for d in outcome.draft_probs
        ],
        stats=stats_message(outcome.stats),
        features=[model_pb2.DraftTokenFeatures(values=values) for values in outcome.features],
    )


def score_response(outcome: ScoreOutcome) -> model_pb2.ScoreResponse:
    return model_pb2.ScoreResponse(
        candidate_target_probs=outcome.candidate_target_probs,
        target_samples=outcome.target_samples,
        recovered_tokens=outcome.recovered_tokens,
        stats=stats_message(outcome.stats),
        top2_logit_margins=outcome.top2_logit_margins,
    )


def info_response(info: EngineInfo) -> model_pb2.InfoResponse:
    tokenizer = model_pb2.TokenizerInfo(fingerprint=info.tokenizer_fingerprint, files=info.tokenizer_files)
    if info.fim is not None:
        tokenizer.fim.CopyFrom(
            model_pb2.FimTokens(prefix=info.fim.prefix, suffix=info.fim.suffix, middle=info.fim.middle)
        )
    return model_pb2.InfoResponse(
        model_name=info.model_name,
        model_type=info.model_type,
        vocab_size=info.vocab_size,
        max_context_tokens=info.max_context_tokens,
        eos_token_ids=info.eos_token_ids,
        tokenizer=tokenizer,
        dtype=info.dtype,
        device=info.device,
        emulated_forward_seconds=info.emulated_forward_seconds,
        max_draft_tokens=info.max_draft_tokens,
        max_queue=info.max_queue,
        model_fingerprint=info.model_fingerprint,
    )
