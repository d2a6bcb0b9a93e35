"""``confidence``: up to k draft tokens, the drafter stopping where it is unsure.

The drafter stops after a draft token whose probability under the drafter is below ``threshold``
(transformers' ``assistant_confidence_threshold`` idea). The stop depends on drafter-side information
only, so verification stays lossless; the token that fell below the threshold stays in the draft.
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.lookahead.policy import LookaheadDecision, RoundObservation


@dataclass
class ConfidenceLookahead:
    """Up to ``k`` draft tokens, stopping after one the drafter gives less than ``threshold``."""

    k: int
    threshold: float

    def decide(self, remaining_tokens: int, drafter_lag: int = 0) -> LookaheadDecision:
        return LookaheadDecision(k=max(1, min(self.k, remaining_tokens)), confidence_threshold=self.threshold)

    def observe(self, observation: RoundObservation) -> None:
        return None

    def describe(self) -> str:
        return f"confidence:{self.k}:{self.threshold:.2f}"
