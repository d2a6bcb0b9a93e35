"""Before the first round: which algorithm and lookahead a request runs, and each model's prompt ids.

Algorithms available now: ``ar`` (target only) and ``sd`` (standard speculative decoding, same
tokenizer). ``auto`` picks ``sd`` when a drafter with the target's tokenizer is configured, else
``ar``; the cross-tokenizer algorithms (``slem``, ``slrs``, ``tli``) are refused until they land.
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.config import CoordinatorSettings
from coordinator.lookahead import (
    ConfidenceLookahead,
    CostEstimates,
    CostModelLookahead,
    LookaheadPolicy,
    StaticLookahead,
)
from coordinator.pair import ModelPair
from coordinator.prompting import PromptFormatError, encode_prompt, encode_target_prompt
from coordinator.seeds import new_request_seed
from coordinator.validation import AlgorithmName, GenerationParams, LookaheadKind, LookaheadRequest
from services.common.errors import InvalidArgumentError

_NOT_YET = (AlgorithmName.SLEM, AlgorithmName.SLRS, AlgorithmName.TLI)


@dataclass(frozen=True)
class RequestPlan:
    """How one request runs."""

    algorithm: AlgorithmName  # AR or SD
    lookahead: LookaheadPolicy | None  # None for AR
    seed: int
    target_prompt: tuple[int, ...]
    drafter_prompt: tuple[int, ...] | None  # None: no drafting (AR, or the drafter cannot take the input)
    fallback_reason: str  # set when the request runs target-only although it asked for drafting

    @property
    def lookahead_label(self) -> str:
        return "none" if self.lookahead is None else self.lookahead.describe()


def resolve_algorithm(requested: AlgorithmName, pair: ModelPair) -> AlgorithmName:
    """The algorithm a request runs, or ``InvalidArgumentError("algorithm", ...)``."""
    if requested in _NOT_YET:
        raise InvalidArgumentError("algorithm", f"{requested.value} is not available yet; use auto, sd or ar")
    if requested is AlgorithmName.AR:
        return AlgorithmName.AR
    if requested is AlgorithmName.AUTO:
        return AlgorithmName.SD if pair.same_tokenizer else AlgorithmName.AR
    if pair.drafter is None:
        raise InvalidArgumentError("algorithm", "sd needs a drafter; this coordinator has none configured")
    if not pair.same_tokenizer:
        raise InvalidArgumentError(
            "algorithm",
            f"sd needs drafter and target with the same tokenizer; the drafter ({pair.drafter.model_name}) "
            f"and the target ({pair.target.model_name}) tokenize differently",
        )
    return AlgorithmName.SD


def make_lookahead(
    request: LookaheadRequest, settings: CoordinatorSettings, drafter_max: int, estimates: CostEstimates
) -> LookaheadPolicy:
    """The lookahead policy of a speculative request (k capped by the drafter's own limit)."""
    if request.kind is LookaheadKind.DISCO:
        raise InvalidArgumentError(
            "lookahead.policy", "disco needs a trained classifier and this coordinator has none"
        )
    if request.kind is LookaheadKind.CONFIDENCE:
        k = min(request.k or settings.max_lookahead_k, drafter_max)
        threshold = request.confidence_threshold or settings.default_confidence_threshold
        return ConfidenceLookahead(k=k, threshold=threshold)
    if request.kind is LookaheadKind.STATIC:
        return StaticLookahead(k=min(request.k or settings.default_lookahead_k, drafter_max))
    k_max = min(request.k or settings.max_lookahead_k, drafter_max)
    return CostModelLookahead(
        estimates=estimates, k_max=k_max, k_initial=min(settings.default_lookahead_k, k_max)
    )


def plan_request(
    params: GenerationParams, pair: ModelPair, settings: CoordinatorSettings, estimates: CostEstimates
) -> RequestPlan:
    """Resolves a validated request against the model pair (refusals name the field)."""
    algorithm = resolve_algorithm(params.algorithm, pair)
    target_prompt = tuple(encode_target_prompt(pair.target, params.input))
    seed = params.seed if params.seed is not None else new_request_seed()
    if algorithm is AlgorithmName.AR or pair.drafter is None:
        return RequestPlan(AlgorithmName.AR, None, seed, target_prompt, None, "")
    lookahead = make_lookahead(params.lookahead, settings, pair.drafter.max_draft_tokens, estimates)
    fallback_reason = ""
    drafter_prompt: tuple[int, ...] | None
    try:
        drafter_prompt = tuple(encode_prompt(pair.drafter, params.input))
    except PromptFormatError as exc:
        drafter_prompt, fallback_reason = None, f"{exc}: target-only decoding"
    if drafter_prompt is not None and not drafter_prompt:
        drafter_prompt, fallback_reason = None, "the drafter's prompt is empty: target-only decoding"
    return RequestPlan(algorithm, lookahead, seed, target_prompt, drafter_prompt, fallback_reason)
