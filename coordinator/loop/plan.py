"""Before the first round: which algorithm and lookahead a request runs, and each model's prompt ids.

Algorithms: ``ar`` (target only), ``sd`` (standard speculative decoding, same vocabulary), and for a
drafter with another vocabulary ``tli`` (token-level intersection), ``slem`` (string-level exact match)
and ``slrs`` (string-level rejection sampling) (Timor et al., ICML 2025, arXiv 2502.05202).

- ``auto``: the same vocabulary -> ``sd``; different, aligned vocabularies -> ``tli`` when sampling,
  ``slem`` when greedy; no drafter, or vocabularies that cannot be aligned -> ``ar`` (with a note).
- ``tli``, ``slem`` or ``slrs`` asked for on a same-vocabulary pair run ``sd``, noted in the response's
  ``fallback_reason``: TLI's intersection is then the whole vocabulary, so it *is* ``sd``, and ``sd``
  verifies a same-vocabulary draft at least as well as the string-level algorithms would.
- ``sd`` on different vocabularies, and any drafting algorithm without a drafter or without an
  alignment, are refused (``InvalidArgumentError`` naming ``algorithm``). So is ``tli`` on a pair whose
  intersection map failed validation at start-up (``ModelPair.tli_error``); ``auto`` then runs ``slem``
  when sampling, noted in ``fallback_reason``.

The statistics report the algorithm that ran, never ``auto``.
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.config import CoordinatorSettings
from coordinator.lookahead import (
    ConfidenceLookahead,
    CostEstimates,
    CostModelLookahead,
    DiscoLookahead,
    LookaheadPolicy,
    StaticLookahead,
    StopClassifierRef,
)
from coordinator.pair import ModelPair
from coordinator.prompting import PromptFormatError, encode_prompt, encode_target_prompt, input_field
from coordinator.request import AlgorithmName, GenerationParams, LookaheadKind, LookaheadRequest
from coordinator.seeds import new_request_seed
from core.errors import InvalidArgumentError

CROSS_VOCABULARY = (AlgorithmName.TLI, AlgorithmName.SLEM, AlgorithmName.SLRS)


@dataclass(frozen=True)
class RequestPlan:
    """How one request runs."""

    algorithm: AlgorithmName  # AR, SD, TLI, SLEM or SLRS
    lookahead: LookaheadPolicy | None  # None for AR
    seed: int
    target_prompt: tuple[int, ...]
    drafter_prompt: tuple[int, ...] | None  # None: no drafting (AR, or the drafter cannot take the input)
    fallback_reason: str  # set when the request runs target-only although it asked for drafting
    note: str = ""  # set when another algorithm runs than the one asked for
    stop_classifier: StopClassifierRef | None = None  # DISCO's stop, named by every Draft (disco, auto)

    @property
    def lookahead_label(self) -> str:
        """The policy, and the stop classifier's threshold this request drafted with (it follows the
        deployment's costs, so each response says which it was): ``disco:8 stop<0.70``."""
        if self.lookahead is None:
            return "none"
        if self.stop_classifier is None:
            return self.lookahead.describe()
        return f"{self.lookahead.describe()} stop<{self.stop_classifier.threshold:.2f}"

    @property
    def cross_vocabulary(self) -> bool:
        return self.algorithm in CROSS_VOCABULARY


@dataclass(frozen=True)
class Regime:
    """What a request's acceptance depends on besides the pair: the algorithm, greedy or sampled."""

    algorithm: AlgorithmName
    greedy: bool

    @property
    def key(self) -> str:
        return f"{self.algorithm.value}:{'greedy' if self.greedy else 'sampled'}"

    @property
    def cross_vocabulary(self) -> bool:
        return self.algorithm in CROSS_VOCABULARY


@dataclass(frozen=True)
class Resolved:
    """The algorithm a request runs and, when it is not the one asked for, why."""

    algorithm: AlgorithmName
    note: str = ""


def resolve_algorithm(requested: AlgorithmName, pair: ModelPair, greedy: bool) -> Resolved:
    """The algorithm a request runs, or ``InvalidArgumentError("algorithm", ...)``."""
    if requested is AlgorithmName.AR:
        return Resolved(AlgorithmName.AR)
    if requested is AlgorithmName.AUTO:
        return _auto(pair, greedy)
    if pair.drafter is None:
        raise InvalidArgumentError(
            "algorithm", f"{requested.value} needs a drafter; this coordinator has none configured"
        )
    if pair.same_tokenizer:
        if requested is AlgorithmName.SD:
            return Resolved(AlgorithmName.SD)
        return Resolved(
            AlgorithmName.SD,
            f"{requested.value} asked for, but drafter and target share one vocabulary: sd ran "
            "(the same-vocabulary case of the cross-vocabulary algorithms)",
        )
    if requested is AlgorithmName.SD:
        raise InvalidArgumentError(
            "algorithm",
            f"sd needs drafter and target with the same tokenizer; the drafter ({pair.drafter.model_name}) "
            f"and the target ({pair.target.model_name}) tokenize differently; use auto, tli, slem or slrs",
        )
    if not pair.cross_vocabulary:
        raise InvalidArgumentError(
            "algorithm", f"{requested.value} needs the two vocabularies aligned, but {pair.alignment_error}"
        )
    if requested is AlgorithmName.TLI and pair.tli_error:
        raise InvalidArgumentError(
            "algorithm", f"tli is refused for this pair: {pair.tli_error}; use slem or slrs"
        )
    return Resolved(requested)


def _auto(pair: ModelPair, greedy: bool) -> Resolved:
    """``auto``: sd for one vocabulary; slem (greedy) or tli (sampling) across vocabularies; else ar."""
    if pair.drafter is None:
        return Resolved(AlgorithmName.AR)
    if pair.same_tokenizer:
        return Resolved(AlgorithmName.SD)
    if pair.cross_vocabulary:
        if not greedy and pair.tli_error:
            return Resolved(
                AlgorithmName.SLEM, f"auto: tli is refused for this pair ({pair.tli_error}); slem ran"
            )
        return Resolved(AlgorithmName.SLEM if greedy else AlgorithmName.TLI)
    return Resolved(AlgorithmName.AR, f"auto: {pair.alignment_error}; target-only decoding")


def make_lookahead(
    request: LookaheadRequest,
    settings: CoordinatorSettings,
    drafter_max: int,
    estimates: CostEstimates,
    regime: Regime,
    *,
    classifier: StopClassifierRef | None = None,
) -> LookaheadPolicy:
    """The lookahead policy of a speculative request (k capped by the drafter's own limit).

    ``auto`` learns acceptance per ``regime`` (algorithm, greedy or sampled). Across vocabularies it
    also stops each draft after a token the drafter itself gives less than
    ``auto_confidence_threshold``: a drafter of another model family is right in stretches, and
    where it is unsure its draft is mostly rejected, so the round costs a short draft instead of a
    long one (the stop depends on drafter-side information only, so verification stays lossless).
    With a trained stop classifier (``classifier``) ``disco`` is allowed and that classifier replaces
    the fixed confidence stop; without one ``disco`` is refused. ``disco`` without a K drafts at most
    ``StopClassifierRef.default_k``: the cap ``tuned_classifier`` chose for the measured costs, else the
    classifier's trained draft length; ``auto`` with the classifier still chooses between speculating
    and a target-only step, but a paying round drafts up to that same length and the classifier ends it
    (``CostModelLookahead.stop_classifier_k``).
    """
    if request.kind is LookaheadKind.DISCO:
        if classifier is None:
            raise InvalidArgumentError(
                "lookahead.policy",
                "disco needs a trained classifier and this coordinator has none (serve the coordinator "
                "with --disco-artifact DIR, or with --disco-artifact auto and an artifact trained for "
                "this drafter and target)",
            )
        return DiscoLookahead(k=min(request.k or classifier.default_k(settings.max_lookahead_k), drafter_max))
    if request.kind is LookaheadKind.CONFIDENCE:
        k = min(request.k or settings.max_lookahead_k, drafter_max)
        threshold = request.confidence_threshold or settings.default_confidence_threshold
        return ConfidenceLookahead(k=k, threshold=threshold)
    if request.kind is LookaheadKind.STATIC:
        return StaticLookahead(k=min(request.k or settings.default_lookahead_k, drafter_max))
    k_max = min(request.k or settings.max_lookahead_k, drafter_max)
    return CostModelLookahead(
        estimates=estimates,
        k_max=k_max,
        k_initial=min(settings.default_lookahead_k, k_max),
        # the classifier, when loaded, replaces the fixed confidence stop across vocabularies
        confidence_threshold=(
            settings.auto_confidence_threshold if regime.cross_vocabulary and classifier is None else 0.0
        ),
        stop_classifier_k=0 if classifier is None else classifier.default_k(k_max),
        regime=regime.key,
    )


def tuned_classifier(
    classifier: StopClassifierRef | None,
    request: LookaheadRequest,
    settings: CoordinatorSettings,
    drafter_max: int,
    estimates: CostEstimates,
    *,
    greedy: bool = True,
) -> StopClassifierRef | None:
    """The pair's stop classifier at the threshold, and for a request without its own K at the cap,
    whose validation replay is fastest at the measured costs (``StopClassifierRef.for_costs``).

    Replays at caps beyond the trained draft length (``polyspec disco calibrate``) are exact replays of
    greedy decoding; a sampled request, which accepts less, chooses among those at the trained length
    or below (at T = 0.7 the greedy-chosen caps of 10-16 ran 0.99x static 8, not faster)."""
    if classifier is None or request.kind not in (LookaheadKind.DISCO, LookaheadKind.AUTO):
        return classifier
    max_k = min(request.k or settings.max_lookahead_k, drafter_max)
    requested = request.k if request.kind is LookaheadKind.DISCO else None
    if not greedy and classifier.trained_k is not None:
        max_k = min(max_k, classifier.trained_k)
        requested = None if requested is None else min(requested, classifier.trained_k)
    return classifier.for_costs(estimates, max_k=max_k, requested_k=requested)


def plan_request(
    params: GenerationParams, pair: ModelPair, settings: CoordinatorSettings, estimates: CostEstimates
) -> RequestPlan:
    """Resolves a validated request against the model pair (refusals name the field)."""
    resolved = resolve_algorithm(params.algorithm, pair, params.sampling.is_greedy)
    algorithm = resolved.algorithm
    target_prompt = tuple(encode_target_prompt(pair.target, params.input))
    if len(target_prompt) > settings.max_prompt_tokens:
        raise InvalidArgumentError(
            input_field(params.input),
            f"is {len(target_prompt)} tokens long; this coordinator takes at most "
            f"{settings.max_prompt_tokens}",
        )
    seed = params.seed if params.seed is not None else new_request_seed()
    if algorithm is AlgorithmName.AR or pair.drafter is None:
        return RequestPlan(AlgorithmName.AR, None, seed, target_prompt, None, "", resolved.note)
    regime = Regime(algorithm, params.sampling.is_greedy)
    drafter_max = pair.drafter.max_draft_tokens
    classifier = tuned_classifier(
        pair.stop_classifier, params.lookahead, settings, drafter_max, estimates, greedy=regime.greedy
    )
    lookahead = make_lookahead(
        params.lookahead, settings, drafter_max, estimates, regime, classifier=classifier
    )
    uses_classifier = classifier is not None and params.lookahead.kind in (
        LookaheadKind.DISCO,
        LookaheadKind.AUTO,
    )
    fallback_reason = ""
    drafter_prompt: tuple[int, ...] | None
    try:
        drafter_prompt = tuple(encode_prompt(pair.drafter, params.input))
    except PromptFormatError as exc:
        drafter_prompt, fallback_reason = None, f"{exc}: target-only decoding"
    if drafter_prompt is not None and not drafter_prompt:
        drafter_prompt, fallback_reason = None, "the drafter's prompt is empty: target-only decoding"
    return RequestPlan(
        algorithm,
        lookahead,
        seed,
        target_prompt,
        drafter_prompt,
        fallback_reason,
        resolved.note,
        stop_classifier=classifier if uses_classifier else None,
    )
