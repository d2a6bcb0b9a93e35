"""``static``: the same lookahead every round."""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.lookahead.policy import LookaheadDecision, RoundObservation


@dataclass
class StaticLookahead:
    """Always ``k`` draft tokens (fewer only where fewer output tokens remain)."""

    k: int

    def decide(self, remaining_tokens: int, drafter_lag: int = 0) -> LookaheadDecision:
        return LookaheadDecision(k=max(1, min(self.k, remaining_tokens)))

    def observe(self, observation: RoundObservation) -> None:
        return None

    def describe(self) -> str:
        return f"static:{self.k}"
