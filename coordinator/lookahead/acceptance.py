"""How many draft tokens a round is expected to yield: the two-stage acceptance model and its counts."""

from __future__ import annotations

from dataclasses import dataclass, fields

from coordinator.lookahead.policy import RoundObservation


@dataclass(frozen=True)
class Acceptance:
    """Two-stage acceptance: ``first``, of a round's first draft token; ``later``, of each further one
    given that all before it were accepted; and ``continuation``, the chance that the drafter drafts
    one more token when it may (below 1 where it stops at low confidence, at EOS or off TLI's
    intersection).

    Drafts are right in stretches: where the first token is accepted the next ones mostly are too, and
    where it is not, nothing after it counts. One i.i.d. rate (Leviathan et al.) fitted to such rounds
    understates what long drafts yield; with ``first == later`` and ``continuation == 1`` this is that
    model. A drafter that stops where it is unsure makes a long lookahead cheap where it would fail.
    """

    first: float
    later: float
    continuation: float = 1.0

    def expected_drafted(self, k: int) -> float:
        """E[draft tokens] of a round that may draft up to k."""
        return _geometric_sum(self.continuation, k)

    def expected_output_tokens(self, k: int) -> float:
        """E[output tokens] of a round with up to k draft tokens (accepted ones plus one from the target)."""
        if k <= 0:
            return 1.0
        return 1.0 + self.first * _geometric_sum(self.continuation * self.later, k)


def expected_output_tokens(acceptance: float, k: int) -> float:
    """E[output tokens] of a round with k draft tokens and i.i.d. per-token acceptance ``acceptance``."""
    return Acceptance(acceptance, acceptance).expected_output_tokens(k)


def _geometric_sum(ratio: float, terms: int) -> float:
    """1 + ratio + ... + ratio^(terms - 1), for ratio clamped to [0, 1]."""
    ratio = min(max(ratio, 0.0), 1.0)
    if terms <= 0:
        return 0.0
    return float(terms) if ratio >= 1.0 else (1.0 - ratio**terms) / (1.0 - ratio)


@dataclass
class AcceptanceCounts:
    """Decayed success / trial counts of each stage of ``Acceptance`` (their ratios are the
    maximum-likelihood rates); older rounds weigh ``decay`` times less per round."""

    first_successes: float = 0.0
    first_trials: float = 0.0
    later_successes: float = 0.0
    later_trials: float = 0.0
    continued: float = 0.0
    continuation_trials: float = 0.0

    def add(self, obs: RoundObservation, decay: float) -> None:
        """Counts one speculative round."""
        later_trials = max(0, obs.accepted - 1) + (1 if 0 < obs.accepted < obs.drafted else 0)
        self.first_successes = decay * self.first_successes + (1 if obs.accepted > 0 else 0)
        self.first_trials = decay * self.first_trials + 1
        self.later_successes = decay * self.later_successes + max(0, obs.accepted - 1)
        self.later_trials = decay * self.later_trials + later_trials
        requested = max(obs.requested, obs.drafted)
        stopped = 1 if obs.drafted < requested else 0
        self.continued = decay * self.continued + max(0, obs.drafted - 1)
        self.continuation_trials = decay * self.continuation_trials + max(0, obs.drafted - 1) + stopped

    def fade(self, decay: float) -> None:
        """Ages the evidence without adding any (a round that drafted nothing)."""
        for count in fields(self):
            setattr(self, count.name, decay * getattr(self, count.name))

    def estimate(self, prior: Acceptance, pseudo_trials: float) -> Acceptance:
        """The rates, each shrunk towards ``prior`` with ``pseudo_trials`` pseudo-trials (a Beta prior)."""

        def rate(successes: float, trials: float, prior_rate: float) -> float:
            return (successes + prior_rate * pseudo_trials) / (trials + pseudo_trials)

        return Acceptance(
            rate(self.first_successes, self.first_trials, prior.first),
            rate(self.later_successes, self.later_trials, prior.later),
            rate(self.continued, self.continuation_trials, prior.continuation),
        )
