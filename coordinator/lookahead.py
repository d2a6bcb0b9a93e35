"""Lookahead policies: how many draft tokens to propose in the next round (0 = a target-only step).

A policy decides *before* a round, from earlier rounds only, so the choice never depends on the
randomness of the round it governs and verification stays lossless (ALGORITHMS.md §6).

- ``StaticLookahead``: always k.
- ``ConfidenceLookahead``: up to k, and the drafter stops after a draft token whose probability is
  below a threshold (transformers' ``assistant_confidence_threshold`` idea).
- ``CostModelLookahead`` (``auto``): picks k in [0, k_max] maximising expected output tokens per second
  under a cost model learned online from the services' own timings: a draft step costs ``c_draft``,
  a target forward over n tokens costs what forwards of that width measured (interpolated between
  widths) and each round adds a fixed overhead (network, coordinator). Acceptance follows the
  two-stage model (``Acceptance``): the first draft token is accepted at one rate, each further one
  at another given the ones before it were (drafts are right in stretches; one i.i.d. rate as in
  Leviathan et al., arXiv 2211.17192, is the special case of equal rates). When no k > 0 beats a
  target-only step, it decodes target-only and re-probes the drafter out of a probe budget (2% of
  the time by default, shared by the requests of a regime), so it is never much slower than ``ar``
  and takes the speedup wherever speculation pays.

Cost estimates describe the deployment, not the request: one ``CostEstimates`` is shared by the
requests of a coordinator (owned by the server, passed in; never a module global).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field, fields
from statistics import median
from typing import Protocol

# Tokens fed to the target beyond which a forward counts as prefill and is kept out of the decode-cost fit.
_PREFILL_TOKENS = 24


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


@dataclass
class StaticLookahead:
    k: int

    def decide(self, remaining_tokens: int, drafter_lag: int = 0) -> LookaheadDecision:
        return LookaheadDecision(k=max(1, min(self.k, remaining_tokens)))

    def observe(self, observation: RoundObservation) -> None:
        return None

    def describe(self) -> str:
        return f"static:{self.k}"


@dataclass
class ConfidenceLookahead:
    k: int
    threshold: float

    def decide(self, remaining_tokens: int, drafter_lag: int = 0) -> LookaheadDecision:
        return LookaheadDecision(k=max(1, min(self.k, remaining_tokens)), confidence_threshold=self.threshold)

    def observe(self, observation: RoundObservation) -> None:
        return None

    def describe(self) -> str:
        return f"confidence:{self.k}:{self.threshold:.2f}"


@dataclass
class _VerifyCosts:
    """Seconds of a target forward per number of tokens fed: the median of each width's last few
    measurements, with interpolation between widths.

    Kept per width rather than fitted to a line: a CPU's cost curve is far from linear (a linear layer
    over 2-9 rows costs 1.4-1.8x one row with oneDNN, 2-4x with MKL), and a GPU's is nearly flat. A
    median rather than a running mean, because the first forward of a width on a fresh process pays
    one-off kernel setup (on this CPU a first 1-token decode took 1.35 s against 0.5 s after) and a
    mean would carry that outlier for dozens of rounds. A width never measured is predicted from its
    measured neighbours: linearly between two, and as the widest measured one beyond them (optimistic,
    so ``auto`` tries it once and then knows).
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


def expected_output_tokens(acceptance: float, k: int) -> float:
    """E[output tokens] of a round with k draft tokens and i.i.d. per-token acceptance ``acceptance``."""
    return Acceptance(acceptance, acceptance).expected_output_tokens(k)


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


def _geometric_sum(ratio: float, terms: int) -> float:
    """1 + ratio + ... + ratio^(terms - 1), for ratio clamped to [0, 1]."""
    ratio = min(max(ratio, 0.0), 1.0)
    if terms <= 0:
        return 0.0
    return float(terms) if ratio >= 1.0 else (1.0 - ratio**terms) / (1.0 - ratio)


@dataclass
class _AcceptanceCounts:
    """Decayed success / trial counts of each stage (their ratios are the maximum-likelihood rates)."""

    first_successes: float = 0.0
    first_trials: float = 0.0
    later_successes: float = 0.0
    later_trials: float = 0.0
    continued: float = 0.0
    continuation_trials: float = 0.0

    def add(self, obs: RoundObservation, decay: float) -> None:
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
    prior_trials: float = 8.0  # a few early misses must not stop speculation for good
    baseline_samples: int = 3  # 1-token target forwards measured before any speculation
    baseline_refresh_rounds: int = 64  # rounds after which one target-only round re-measures them
    _counts: dict[str, _AcceptanceCounts] = field(default_factory=dict, init=False)
    _credit: dict[str, float] = field(default_factory=dict, init=False)
    _verify: _VerifyCosts = field(default_factory=_VerifyCosts, init=False)
    _since_baseline: int = field(default=0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def _ema(self, old: float | None, new: float) -> float:
        return new if old is None else self.decay * old + (1.0 - self.decay) * new

    def observe(self, obs: RoundObservation, regime: str = "") -> None:
        """Learns from one round; ``regime`` keys its acceptance (timings are the deployment's)."""
        with self._lock:
            if obs.verify_tokens <= _PREFILL_TOKENS and obs.verify_tokens > 0:
                self._verify.add(obs.verify_tokens, obs.verify_seconds)
            self._since_baseline = 0 if obs.verify_tokens == 1 else self._since_baseline + 1
            overhead = max(0.0, obs.round_seconds - obs.draft_seconds - obs.verify_seconds)
            if obs.drafted == 0:
                self.ar_overhead_seconds = self._ema(self.ar_overhead_seconds, overhead)
                return
            self.spec_overhead_seconds = self._ema(self.spec_overhead_seconds, overhead)
            self._observe_drafter(obs)
            self._counts.setdefault(regime, _AcceptanceCounts()).add(obs, self.acceptance_decay)

    def _observe_drafter(self, obs: RoundObservation) -> None:
        """A drafter step's cost from rounds with little catch-up; the catch-up's from the others."""
        if obs.draft_forwards <= 0:
            return
        catch_up = obs.draft_computed_tokens - obs.draft_forwards
        if catch_up <= _PREFILL_TOKENS:
            per_step = obs.draft_seconds / obs.draft_forwards
            self.draft_step_seconds = self._ema(self.draft_step_seconds, per_step)
        elif self.draft_step_seconds is not None:
            prefill = max(0.0, obs.draft_seconds - obs.draft_forwards * self.draft_step_seconds)
            self.catch_up_seconds_per_token = self._ema(self.catch_up_seconds_per_token, prefill / catch_up)

    def acceptance(self, regime: str = "") -> Acceptance | None:
        """Acceptance over recent rounds of the requests of one regime (None before any speculative
        round), smoothed with ``prior_trials`` pseudo-trials at ``prior_acceptance``. A regime is what
        changes acceptance but not timings: the algorithm, greedy or sampled (a drafter accepted 50%
        of the time greedily may be accepted 10% of the time at temperature 0.7)."""
        with self._lock:
            counts = self._counts.get(regime)
            if counts is None or counts.first_trials <= 0:
                return None
            prior = Acceptance(self.prior_acceptance, self.prior_acceptance)
            return counts.estimate(prior, self.prior_trials)

    def verify_seconds(self, tokens: float) -> float | None:
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


@dataclass
class CostModelLookahead:
    """``auto``: the k (0 = target-only) with the best expected output tokens per second.

    ``k_initial`` is used until the estimates exist. When no k > 0 pays, the request decodes
    target-only and re-probes the drafter with a short round (``probe_k`` tokens; the drafter may have
    become useful again) only out of a *probe budget*, kept per regime in the shared ``CostEstimates``:
    every target-only round earns ``probe_budget`` times its duration, every speculative round is
    charged what it actually cost beyond the target-only time of the tokens it produced (a paying
    round earns), and a probe needs enough credit for its expected loss, which it reserves when it is
    decided. The expected loss includes the drafter's catch-up: the tokens it has not seen yet (on a
    request's first probe, its whole prompt) times the learned prefill cost per token. Probing
    therefore costs at most about ``probe_budget`` of the regime's time (plus one probe), however
    expensive a probe is (a slow drafter, a long catch-up, a wide verification), and probes come as
    often as they are cheap. Credit stays within ``credit_probes`` expected probe losses either way:
    gains banked earlier do not fund a burst of probes later, and a losing stretch delays the next
    probe rather than stopping probes for good.
    """

    estimates: CostEstimates
    k_max: int
    k_initial: int = 4
    probe_budget: float = 0.02
    probe_k: int = 2
    credit_probes: float = 2.0
    confidence_threshold: float = 0.0
    regime: str = ""
    prior_acceptance: float = 0.6
    prior_trials: float = 3.0  # pseudo-trials of the shared estimate in this request's own
    decay: float = 0.9
    _counts: _AcceptanceCounts = field(default_factory=_AcceptanceCounts, init=False)
    _reserved: float = field(default=0.0, init=False)  # the credit the round being run took
    _drafter_lag: int = field(default=0, init=False)

    def decide(self, remaining_tokens: int, drafter_lag: int = 0) -> LookaheadDecision:
        self._drafter_lag = drafter_lag
        cap = max(0, min(self.k_max, remaining_tokens - 1)) if remaining_tokens > 1 else 0
        if cap == 0 or self.estimates.claim_baseline_round():
            return LookaheadDecision(k=0)
        k = self._best_k(cap)
        if k == 0:
            probe = min(self.probe_k, cap)
            loss = self._expected_loss(probe)
            if loss is not None and self.estimates.reserve_credit(self.regime, loss):
                k, self._reserved = probe, loss
        return LookaheadDecision(k=k, confidence_threshold=self.confidence_threshold if k else 0.0)

    def _ar_step(self) -> float | None:
        """Expected seconds of a target-only round (None before one was measured)."""
        verify_one = self.estimates.verify_seconds(1)
        if verify_one is None:
            return None
        return verify_one + (self.estimates.ar_overhead_seconds or 0.0)

    def _round_seconds(self, k: int, acceptance: Acceptance | None = None) -> float | None:
        """Expected seconds of a round with up to k draft tokens (None before the costs were measured)."""
        est = self.estimates
        drafted = (acceptance or self._acceptance()).expected_drafted(k)
        draft_step, verify = est.draft_step_seconds, est.verify_seconds(drafted + 1)
        if draft_step is None or verify is None:
            return None
        return drafted * draft_step + verify + (est.spec_overhead_seconds or 0.0)

    def _expected_loss(self, k: int) -> float | None:
        """Expected seconds a k-token round (with the drafter's catch-up) loses against target-only
        decoding of its output."""
        acceptance, ar_step = self._acceptance(), self._ar_step()
        seconds = self._round_seconds(k, acceptance)
        if seconds is None or ar_step is None:
            return None
        catch_up = self._drafter_lag * (self.estimates.catch_up_seconds_per_token or 0.0)
        return seconds + catch_up - acceptance.expected_output_tokens(k) * ar_step

    def _best_k(self, cap: int) -> int:
        ar_step = self._ar_step()
        if ar_step is None or self.estimates.draft_step_seconds is None:
            return min(self.k_initial, cap)
        acceptance = self._acceptance()
        best_k, best_rate = 0, 1.0 / max(1e-9, ar_step)
        for k in range(1, cap + 1):
            seconds = self._round_seconds(k, acceptance) or 0.0
            rate = acceptance.expected_output_tokens(k) / max(1e-9, seconds)
            if rate > best_rate * (1.0 + 1e-6):
                best_k, best_rate = k, rate
        return best_k

    def observe(self, observation: RoundObservation) -> None:
        self.estimates.observe(observation, self.regime)
        if observation.drafted > 0:
            self._counts.add(observation, self.decay)
        else:  # the text moved on: what the drafter did a while ago says less about what comes next
            self._counts.fade(self.decay)
        self._settle(observation)

    def _settle(self, observation: RoundObservation) -> None:
        """Books the round on the regime's probe credit (see the class docstring)."""
        reserved, self._reserved = self._reserved, 0.0
        ar_step = self._ar_step()
        if ar_step is None:
            return
        if observation.drafted == 0:
            earned = self.probe_budget * observation.round_seconds
        else:
            earned = (observation.accepted + 1) * ar_step - observation.round_seconds
        loss = self._expected_loss(min(self.probe_k, self.k_max))
        cap = 0.0 if loss is None else self.credit_probes * loss  # unpriced: nothing to save for
        self.estimates.book_credit(self.regime, reserved + earned, cap)

    def _acceptance(self) -> Acceptance:
        """This request's acceptance, shrunk towards the deployment-wide estimate (a Beta-style prior)."""
        shared = self.estimates.acceptance(self.regime)
        prior = Acceptance(self.prior_acceptance, self.prior_acceptance) if shared is None else shared
        return self._counts.estimate(prior, self.prior_trials)

    def describe(self) -> str:
        return f"auto:{self.k_max}"
