"""Combining drafts: per round, a model-free drafter's draft or the model drafter's, by expected rate.

A lookup drafter (prompt lookup, suffix tree) answers in about a millisecond with the continuation of
the longest match in the context, or nothing. Where its draft is long and such drafts are accepted, a
round that verifies it yields more output tokens per second than a round of the model drafter, which
pays a forward per draft token; elsewhere the model drafter (or a target-only step) is better.
``LookupChooser`` decides per round, before verification and from earlier rounds only (so the output
law stays the target's): it prices a lookup round of the m tokens on offer under the same cost model as
``auto`` (the target's verification cost at that width, the round overhead, the lookup call's own
measured time) with the lookup drafts' own acceptance, learned separately from the model drafter's
(two-stage, decayed, shrunk to a prior), and takes it when its expected rate is at least the model
round's (``CostModelLookahead.best_rate``). Before the costs are measured, or under a lookahead that
does not price its rounds (``static``, ``confidence``), a lookup draft of at least ``min_tokens`` is
taken.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coordinator.lookahead.acceptance import Acceptance, AcceptanceCounts
from coordinator.lookahead.costs import CostEstimates
from coordinator.lookahead.policy import RoundObservation

EMA = 0.2  # weight of the newest lookup call time in its average


@dataclass
class LookupChooser:
    """One request's choice between the lookup drafter's draft and the model drafter's."""

    estimates: CostEstimates
    min_tokens: int = 2
    prior_acceptance: float = 0.5
    prior_trials: float = 3.0
    decay: float = 0.9
    _counts: AcceptanceCounts = field(default_factory=AcceptanceCounts, init=False)
    _call_seconds: float | None = field(default=None, init=False)

    def acceptance(self) -> Acceptance:
        """The lookup drafts' acceptance so far (a lookup draft is all it offers: continuation 1)."""
        prior = Acceptance(self.prior_acceptance, self.prior_acceptance)
        estimate = self._counts.estimate(prior, self.prior_trials)
        return Acceptance(estimate.first, estimate.later, 1.0)

    def expected_rate(self, offered: int) -> float | None:
        """Expected output tokens per second of a round verifying ``offered`` lookup tokens (None before
        the target's costs were measured)."""
        verify = self.estimates.verify_seconds(offered + 1)
        if verify is None:
            return None
        seconds = verify + (self.estimates.spec_overhead_seconds or 0.0) + (self._call_seconds or 0.0)
        return self.acceptance().expected_output_tokens(offered) / max(1e-9, seconds)

    def take(self, offered: int, model_rate: float | None) -> bool:
        """Whether the round verifies the ``offered`` lookup tokens instead of a model round expected to
        yield ``model_rate`` tokens per second (None: that round is not priced)."""
        if offered <= 0:
            return False
        rate = self.expected_rate(offered)
        if rate is None or model_rate is None:
            return offered >= self.min_tokens
        return rate >= model_rate

    def observe_call(self, seconds: float) -> None:
        """Times one lookup Draft call (what asking costs every round)."""
        old = self._call_seconds
        self._call_seconds = seconds if old is None else (1 - EMA) * old + EMA * seconds

    def observe(self, observation: RoundObservation) -> None:
        """Learns from a round that verified a lookup draft."""
        if observation.drafted > 0:
            self._counts.add(observation, self.decay)
