"""``disco``: up to k draft tokens, the drafter stopping where its trained classifier says so (DISCO).

DISCO (Mamou et al. 2024, "Dynamic Speculation Lookahead") trains a small classifier per drafter/target
pair on drafter-side features (``core.disco``); the drafter service evaluates it between draft tokens
and stops after a token it judges likely to be rejected, keeping that token. This policy only sets the
cap (``disco:K``: K; plain ``disco``: the cap whose validation replay is fastest at the measured costs
when the artifact was replayed at several caps (``polyspec disco calibrate``), otherwise the draft
length the classifier was trained on, ``trained_k``, beyond which its feature ``position`` was never
seen); the classifier itself travels on the request plan
(``RequestPlan.stop_classifier``) so that every Draft of the request, ``auto``'s included, names it.
The stop reads the drafter's own features only, so verification stays lossless whatever the classifier
decides. Its threshold (and plain ``disco``'s cap) is chosen per request for the deployment's measured
costs (``StopClassifierRef.for_costs``) from the artifact's validation replays.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from coordinator.lookahead.costs import CostEstimates
from coordinator.lookahead.policy import LookaheadDecision, RoundObservation
from core.disco.thresholds import ThresholdReplay, best_setting


@dataclass(frozen=True)
class StopClassifierRef:
    """A stop classifier the coordinator registered on its drafters, as a Draft names it."""

    classifier_id: str
    threshold: float  # its continue-probability threshold (the artifact's)
    trained_k: int | None = None  # the draft length it was trained on (None: the artifact does not say)
    # each threshold's validation replay (``core.disco.thresholds``; the artifact's ``threshold_replay``)
    replays: tuple[ThresholdReplay, ...] = ()

    # the cap ``for_costs`` chose for a request without its own K (None: none chosen, ``default_k`` rules)
    cap: int | None = None

    def for_costs(
        self, estimates: CostEstimates, *, max_k: int, requested_k: int | None = None
    ) -> StopClassifierRef:
        """This classifier at the threshold whose validation replay is fastest at the deployment's
        measured costs: a drafter step, the target's verification per width and a round's cost beyond
        compute (``CostEstimates``). A request without its own K (``requested_k``) also gets the fastest
        of the caps the artifact was replayed at, up to ``max_k`` (``core.disco.thresholds.best_setting``).
        Until the costs are measured, or for an artifact without replays, the artifact's own threshold
        (chosen at the step costs of the machine that collected its rounds) and ``default_k``."""
        step, overhead = estimates.draft_step_seconds, estimates.spec_overhead_seconds
        if not self.replays or step is None or estimates.verify_seconds(2) is None:
            return self

        def verify(drafted: int) -> float:
            return estimates.verify_seconds(drafted + 1) or 0.0

        cap, threshold = best_setting(
            self.replays, step, verify, overhead or 0.0, max_cap=max_k, cap=requested_k
        )
        return replace(self, threshold=threshold, cap=None if requested_k else cap)

    def default_k(self, max_k: int) -> int:
        """The cap of a request without its own K: the one ``for_costs`` chose, else the trained draft
        length (the classifier never saw a later ``position``), at most ``max_k``; ``max_k`` itself when
        the artifact does not say."""
        if self.cap is not None:
            return min(self.cap, max_k)
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
