"""What every lookahead policy is: the protocol, the decision it makes and the round it learns from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class LookaheadDecision:
    """What the next round does: ``k`` draft tokens (0 = target-only step) and the drafter's stop rule."""

    k: int
    confidence_threshold: float = 0.0


@dataclass(frozen=True)
class RoundObservation:
    """What one finished round cost and yielded, as measured by the services and the coordinator."""

    drafted: int  # draft tokens proposed (0 for a target-only step)
    accepted: int  # leading draft tokens the target accepted
    draft_seconds: float  # drafter compute time (ForwardStats.compute_seconds)
    draft_forwards: int
    draft_computed_tokens: int  # tokens the drafter fed through its model (catch-up included)
    verify_seconds: float  # target compute time
    verify_tokens: int  # tokens the target fed through its model
    round_seconds: float  # wall time of the whole round at the coordinator
    requested: int = 0  # the lookahead asked for (drafted < requested: the drafter stopped early)


class LookaheadPolicy(Protocol):
    """Chooses each round's lookahead; ``describe`` is reported in the response statistics."""

    def decide(self, remaining_tokens: int, drafter_lag: int = 0) -> LookaheadDecision:
        """``drafter_lag``: tokens of the context the drafter has not fed yet (its next call's catch-up)."""
        ...

    def observe(self, observation: RoundObservation) -> None: ...

    def describe(self) -> str: ...
