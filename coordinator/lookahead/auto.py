"""``auto``: the lookahead with the best expected output tokens per second, under an online cost model.

It picks k in [0, k_max] from what earlier rounds measured (``CostEstimates``): a draft step costs
``draft_step_seconds``, a target forward over n tokens what forwards of that width measured
(interpolated between widths), and each round adds a fixed overhead (network, coordinator).
Acceptance follows the two-stage model (``Acceptance``). When no k > 0 beats a target-only step it
decodes target-only and re-probes the drafter out of a probe budget shared by the requests of a
regime, so it is never much slower than ``ar`` and takes the speedup wherever speculation pays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from coordinator.lookahead.acceptance import Acceptance, AcceptanceCounts
from coordinator.lookahead.costs import CostEstimates
from coordinator.lookahead.policy import LookaheadDecision, RoundObservation


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
    stop_classifier_k: int = 0
    """With DISCO's trained stop classifier: the draft length a paying round asks for (the classifier's
    trained length, when a round that long is expected to beat a target-only step), the classifier
    ending the draft where it judges; 0 without one. The cost model still chooses between speculating
    and a target-only step (and probes), but not the length: the
    classifier's threshold is chosen for drafts of up to its trained length, and auto's own shorter
    cap on top of it cut the drafts twice (measured: 3.4-4.2 tokens a round, 0.91-0.92x ``disco``)."""
    regime: str = ""
    prior_acceptance: float = 0.6
    shared_acceptance_trials: float = 3.0
    """Pseudo-trials of the deployment's shared acceptance estimate for the regime (``prior_acceptance``
    before it has one) in this request's own acceptance: how much the request trusts its own rounds."""
    decay: float = 0.9
    _counts: AcceptanceCounts = field(default_factory=AcceptanceCounts, init=False)
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
        elif self.stop_classifier_k and self._pays(min(cap, self.stop_classifier_k)):
            k = min(cap, self.stop_classifier_k)
        return LookaheadDecision(k=k, confidence_threshold=self.confidence_threshold if k else 0.0)

    def best_rate(self, remaining_tokens: int) -> float | None:
        """Expected output tokens per second of the round ``decide`` would choose now, without deciding
        (no probe credit is reserved); None before the costs were measured."""
        cap = max(0, min(self.k_max, remaining_tokens - 1)) if remaining_tokens > 1 else 0
        ar_step = self._ar_step()
        if ar_step is None or self.estimates.draft_step_seconds is None:
            return None
        k = self._best_k(cap) if cap else 0
        if k == 0:
            return 1.0 / max(1e-9, ar_step)
        acceptance = self._acceptance()
        seconds = self._round_seconds(k, acceptance)
        return None if seconds is None else acceptance.expected_output_tokens(k) / max(1e-9, seconds)

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
        """The k in [0, cap] with the best expected output tokens per second (``k_initial`` before
        the costs were measured)."""
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

    def _pays(self, k: int) -> bool:
        """Whether a round of lookahead k is expected to beat a target-only step (True before the costs
        were measured; the drafts the classifier ended early are in the learned acceptance)."""
        ar_step = self._ar_step()
        if ar_step is None or self.estimates.draft_step_seconds is None:
            return True
        acceptance = self._acceptance()
        seconds = self._round_seconds(k, acceptance) or 0.0
        return acceptance.expected_output_tokens(k) / max(1e-9, seconds) > 1.0 / max(1e-9, ar_step)

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
        return self._counts.estimate(prior, self.shared_acceptance_trials)

    def describe(self) -> str:
        return f"auto:{self.k_max}"
