"""What rounds cost and yield in this deployment, learned online from the services' own timings.

One ``CostEstimates`` is shared by the requests of a coordinator (owned by the server, passed in; never
a module global): cost estimates describe the deployment, not the request.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from statistics import median

from coordinator.lookahead.acceptance import Acceptance, AcceptanceCounts
from coordinator.lookahead.policy import RoundObservation

PREFILL_TOKENS = 24
"""Tokens fed to a model beyond which a forward counts as prefill and is kept out of the decode-cost fit."""


@dataclass
class VerifyCostTable:
    """Seconds of a target forward per number of tokens fed: the median of each width's last few
    measurements, with interpolation between widths.

    Kept per width rather than fitted to a line: a CPU's cost curve is far from linear in the width
    (the math libraries run a few rows for well under a row's cost each) and a GPU's is nearly flat.
    A median rather than a running mean, because the first forward of a width on a fresh process pays
    one-off kernel set-up and a mean would carry that outlier for dozens of rounds. A width never
    measured is predicted from its measured neighbours: linearly between two, and as the widest
    measured one beyond them (optimistic, so ``auto`` tries it once and then knows).
    Figures: docs/benchmarks/notes.md.
    """

    window: int = 5
    samples: dict[int, deque[float]] = field(default_factory=dict)

    def add(self, tokens: int, seconds: float) -> None:
        self.samples.setdefault(tokens, deque(maxlen=self.window)).append(seconds)

    @property
    def ready(self) -> bool:
        return bool(self.samples)

    def count(self, tokens: int) -> int:
        return len(self.samples.get(tokens, ()))

    def predict(self, tokens: float) -> float:
        known = self.samples
        below = [n for n in known if n <= tokens]
        above = [n for n in known if n >= tokens]
        if not below:
            return median(known[min(above)])
        low = max(below)
        if not above:
            return median(known[low])
        high = min(above)
        if high == low:
            return median(known[low])
        share = (tokens - low) / (high - low)
        return median(known[low]) + share * (median(known[high]) - median(known[low]))


@dataclass
class CostEstimates:
    """Deployment-wide timing estimates, learned from every request's rounds (thread-safe).

    Besides timings and per-regime acceptance it holds each regime's *probe credit* (see
    ``CostModelLookahead``): shared, so probing is bounded by a share of all the regime's time, not
    restarted by every request, and a request may probe in its first rounds, where what a probe
    finds is worth the most. It also keeps the 1-token target cost fresh: that cost is the yardstick
    of every decision, and a policy that always speculates would otherwise never measure it again
    (``claim_baseline_round``).
    """

    decay: float = 0.9
    acceptance_decay: float = 0.98
    draft_step_seconds: float | None = None
    catch_up_seconds_per_token: float | None = None  # the drafter's prefill of tokens it has not seen
    spec_overhead_seconds: float | None = None
    ar_overhead_seconds: float | None = None
    prior_acceptance: float = 0.6
    prior_acceptance_trials: float = 8.0
    """Pseudo-trials at ``prior_acceptance`` in each regime's shared acceptance estimate (a Beta prior):
    a few early misses must not stop speculation for good."""
    baseline_samples: int = 3  # 1-token target forwards measured before any speculation
    baseline_refresh_rounds: int = 64  # rounds after which one target-only round re-measures them
    _counts: dict[str, AcceptanceCounts] = field(default_factory=dict, init=False)
    _credit: dict[str, float] = field(default_factory=dict, init=False)
    _verify: VerifyCostTable = field(default_factory=VerifyCostTable, init=False)
    _since_baseline: int = field(default=0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def _ema(self, old: float | None, new: float) -> float:
        return new if old is None else self.decay * old + (1.0 - self.decay) * new

    def observe(self, obs: RoundObservation, regime: str = "") -> None:
        """Learns from one round; ``regime`` keys its acceptance (timings are the deployment's)."""
        with self._lock:
            if obs.verify_tokens <= PREFILL_TOKENS and obs.verify_tokens > 0:
                self._verify.add(obs.verify_tokens, obs.verify_seconds)
            self._since_baseline = 0 if obs.verify_tokens == 1 else self._since_baseline + 1
            overhead = max(0.0, obs.round_seconds - obs.draft_seconds - obs.verify_seconds)
            if obs.drafted == 0:  # a round that asked for a draft and got none is no target-only round
                if obs.requested == 0:
                    self.ar_overhead_seconds = self._ema(self.ar_overhead_seconds, overhead)
                return
            self.spec_overhead_seconds = self._ema(self.spec_overhead_seconds, overhead)
            self._observe_drafter(obs)
            self._counts.setdefault(regime, AcceptanceCounts()).add(obs, self.acceptance_decay)

    def _observe_drafter(self, obs: RoundObservation) -> None:
        """A drafter step's cost from rounds with little catch-up; the catch-up's from the others.

        A model-free drafter (``polyspec serve drafter``) runs no forwards: its whole call, catch-up
        included, is what its draft tokens cost, so a step costs the call's time per draft token.
        """
        if obs.draft_forwards <= 0:
            if obs.drafted > 0:
                self.draft_step_seconds = self._ema(self.draft_step_seconds, obs.draft_seconds / obs.drafted)
            return
        catch_up = obs.draft_computed_tokens - obs.draft_forwards
        if catch_up <= PREFILL_TOKENS:
            per_step = obs.draft_seconds / obs.draft_forwards
            self.draft_step_seconds = self._ema(self.draft_step_seconds, per_step)
        elif self.draft_step_seconds is not None:
            prefill = max(0.0, obs.draft_seconds - obs.draft_forwards * self.draft_step_seconds)
            self.catch_up_seconds_per_token = self._ema(self.catch_up_seconds_per_token, prefill / catch_up)

    def acceptance(self, regime: str = "") -> Acceptance | None:
        """Acceptance over recent rounds of the requests of one regime (None before any speculative
        round), smoothed with ``prior_acceptance_trials`` pseudo-trials at ``prior_acceptance``. A
        regime is what changes acceptance but not timings: the algorithm, greedy or sampled (the same
        drafter can be accepted far less often when sampling than when decoding greedily)."""
        with self._lock:
            counts = self._counts.get(regime)
            if counts is None or counts.first_trials <= 0:
                return None
            prior = Acceptance(self.prior_acceptance, self.prior_acceptance)
            return counts.estimate(prior, self.prior_acceptance_trials)

    def verify_seconds(self, tokens: float) -> float | None:
        """Expected seconds of a target forward over ``tokens`` tokens (None before any was measured)."""
        with self._lock:
            return self._verify.predict(tokens) if self._verify.ready else None

    def claim_baseline_round(self) -> bool:
        """Whether the caller's next round should be target-only to measure the 1-token target cost:
        until ``baseline_samples`` exist, then once every ``baseline_refresh_rounds`` rounds without
        one (one caller claims it; concurrent requests keep speculating)."""
        with self._lock:
            if (
                self._verify.count(1) >= self.baseline_samples
                and self._since_baseline < self.baseline_refresh_rounds
            ):
                return False
            self._since_baseline = 0
            return True

    def credit(self, regime: str) -> float:
        """The regime's probe credit in seconds (negative: a debt)."""
        with self._lock:
            return self._credit.get(regime, 0.0)

    def book_credit(self, regime: str, seconds: float, cap: float) -> None:
        """Adds ``seconds`` (negative: a charge) to the regime's probe credit, within ``[-cap, cap]``
        (``cap``: the caller's price of ``credit_probes`` probes). Earnings bank only up to the cap and
        never lower credit another request banked; debts stop at it, so a losing stretch delays the
        next probe by a few probes' worth of budget, not for good."""
        cap = max(cap, 0.0)
        with self._lock:
            credit = self._credit.get(regime, 0.0)
            total = credit + seconds
            if seconds > 0:
                self._credit[regime] = min(total, max(cap, credit))
            else:
                self._credit[regime] = max(total, min(-cap, credit))

    def reserve_credit(self, regime: str, seconds: float) -> bool:
        """Takes ``seconds`` from the regime's credit if it holds that much (a probe's expected loss)."""
        with self._lock:
            credit = self._credit.get(regime, 0.0)
            if credit < seconds:
                return False
            self._credit[regime] = credit - seconds
            return True
