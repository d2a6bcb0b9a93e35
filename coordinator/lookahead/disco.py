"""``disco``: up to k draft tokens, the drafter stopping where its trained classifier says so (DISCO).

DISCO (Mamou et al. 2024, "Dynamic Speculation Lookahead") trains a small classifier per drafter/target
pair on drafter-side features (``core.disco``); the drafter service evaluates it between draft tokens
and stops after a token it judges likely to be rejected, keeping that token. This policy only sets the
cap (``disco:K``: K; plain ``disco``: the draft length the classifier was trained on, ``trained_k``,
beyond which its feature ``position`` was never seen); the classifier itself travels on the request plan
(``RequestPlan.stop_classifier``) so that every Draft of the request, ``auto``'s included, names it.
The stop reads the drafter's own features only, so verification stays lossless whatever the classifier
decides. Its threshold is chosen per request for the deployment's measured costs
(``StopClassifierRef.for_costs``) from the artifact's validation replays.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from coordinator.lookahead.costs import CostEstimates
from coordinator.lookahead.policy import LookaheadDecision, RoundObservation
from core.disco.thresholds import ThresholdReplay, best_threshold


@dataclass(frozen=True)
class StopClassifierRef:
    """A stop classifier the coordinator registered on its drafters, as a Draft names it."""

    classifier_id: str
    threshold: float  # its continue-probability threshold (the artifact's)
    trained_k: int | None = None  # the draft length it was trained on (None: the artifact does not say)
    # each threshold's validation replay (``core.disco.thresholds``; the artifact's ``threshold_replay``)
    replays: tuple[ThresholdReplay, ...] = ()

    def for_costs(self, estimates: CostEstimates) -> StopClassifierRef:
        """This classifier at the threshold whose validation replay is fastest at the deployment's
        measured costs: a drafter step, the target's verification per width and a round's cost beyond
        compute (``CostEstimates``). Until they are measured, or for an artifact without replays, the
        artifact's own threshold (chosen at the step costs of the machine that collected its rounds)."""
        step, overhead = estimates.draft_step_seconds, estimates.spec_overhead_seconds
        if not self.replays or step is None or estimates.verify_seconds(2) is None:
            return self

        def verify(drafted: int) -> float:
            return estimates.verify_seconds(drafted + 1) or 0.0

        threshold = best_threshold(self.replays, step, verify, overhead or 0.0)
        return replace(self, threshold=threshold)

    def default_k(self, max_k: int) -> int:
        """``disco``'s cap without a K: the trained draft length (the classifier never saw a later
        ``position``), at most ``max_k``; ``max_k`` itself when the artifact does not say."""
        return max_k if self.trained_k is None else min(self.trained_k, max_k)


@dataclass
class DiscoLookahead:
    """Up to ``k`` draft tokens; the classifier named by the request plan ends a draft early."""

    k: int

    def decide(self, remaining_tokens: int, drafter_lag: int = 0) -> LookaheadDecision:
        return LookaheadDecision(k=max(1, min(self.k, remaining_tokens)))

    def observe(self, observation: RoundObservation) -> None:
        return None

    def describe(self) -> str:
        return f"disco:{self.k}"
