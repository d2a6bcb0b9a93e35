"""Lookahead policies, driven by a simulated deployment with known costs (no timing of real code)."""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

import pytest

from coordinator.config import CoordinatorSettings
from coordinator.lookahead import (
    Acceptance,
    ConfidenceLookahead,
    CostEstimates,
    CostModelLookahead,
    LookaheadPolicy,
    RoundObservation,
    StaticLookahead,
    StopClassifierRef,
    expected_output_tokens,
)
from coordinator.loop.plan import Regime, make_lookahead
from coordinator.request import AlgorithmName, LookaheadKind, LookaheadRequest


@dataclass(frozen=True)
class SimulatedPair:
    """A drafter/target pair with deterministic costs and i.i.d. per-token acceptance."""

    acceptance: float
    draft_step: float
    verify_base: float
    verify_per_token: float
    overhead: float = 0.002

    def round(self, k: int, rng: random.Random) -> tuple[int, RoundObservation]:
        accepted = 0
        while accepted < k and rng.random() < self.acceptance:
            accepted += 1
        verify_tokens = k + 1
        verify = self.verify_base + self.verify_per_token * verify_tokens
        draft = self.draft_step * k
        obs = RoundObservation(
            drafted=k,
            accepted=accepted,
            draft_seconds=draft,
            draft_forwards=k,
            draft_computed_tokens=k + (1 if k else 0),
            verify_seconds=verify,
            verify_tokens=verify_tokens,
            round_seconds=draft + verify + self.overhead,
        )
        return accepted + 1, obs


def _throughput(policy: LookaheadPolicy, pair: SimulatedPair, tokens: int, seed: int = 0) -> float:
    rng = random.Random(seed)
    produced, seconds = 0, 0.0
    while produced < tokens:
        decision = policy.decide(tokens - produced)
        out, obs = pair.round(decision.k, rng)
        policy.observe(obs)
        produced += out
        seconds += obs.round_seconds
    return produced / seconds


def _best_static(pair: SimulatedPair, tokens: int) -> float:
    return max(_throughput(StaticLookahead(k), pair, tokens) for k in range(1, 13))


def _ar(pair: SimulatedPair, tokens: int) -> float:
    step = pair.verify_base + pair.verify_per_token + pair.overhead
    return 1.0 / step


def test_expected_output_tokens() -> None:
    assert expected_output_tokens(0.0, 5) == pytest.approx(1.0)
    assert expected_output_tokens(1.0, 5) == pytest.approx(6.0)
    assert expected_output_tokens(0.5, 2) == pytest.approx(1.75)
    assert expected_output_tokens(0.3, 0) == 1.0


def test_static_and_confidence_respect_remaining_tokens() -> None:
    assert StaticLookahead(5).decide(remaining_tokens=2).k == 2
    decision = ConfidenceLookahead(8, 0.4).decide(remaining_tokens=100)
    assert (decision.k, decision.confidence_threshold) == (8, 0.4)
    assert StaticLookahead(5).describe() == "static:5"


# GPU-like: verification costs about one step, a cheap drafter, good acceptance -> long lookahead pays.
GPU_GOOD = SimulatedPair(acceptance=0.8, draft_step=0.004, verify_base=0.030, verify_per_token=0.0005)
# CPU-like (Qwen-1.5B target, 0.5B drafter): verification grows with tokens, drafter ~0.4 of a step.
CPU_CODER = SimulatedPair(acceptance=0.85, draft_step=0.115, verify_base=0.21, verify_per_token=0.085)
# A useless drafter: speculation never pays, auto must fall back to (almost) target-only speed.
USELESS = SimulatedPair(acceptance=0.05, draft_step=0.05, verify_base=0.2, verify_per_token=0.08)


@pytest.mark.parametrize("pair", [GPU_GOOD, CPU_CODER, USELESS], ids=["gpu", "cpu", "useless"])
def test_auto_is_close_to_the_best_of_ar_and_static(pair: SimulatedPair) -> None:
    tokens = 3000
    auto = _throughput(CostModelLookahead(CostEstimates(), k_max=12), pair, tokens)
    best = max(_best_static(pair, tokens), _ar(pair, tokens))
    assert auto >= 0.93 * best, (auto, best)


def _ks_and_seconds(
    policy: CostModelLookahead, pair: SimulatedPair, rounds: int
) -> tuple[list[int], float, int]:
    """Runs ``rounds`` rounds: the lookahead of each, total seconds and output tokens."""
    rng = random.Random(1)
    ks, seconds, produced = [], 0.0, 0
    for _ in range(rounds):
        decision = policy.decide(remaining_tokens=10_000)
        ks.append(decision.k)
        out, obs = pair.round(decision.k, rng)
        policy.observe(obs)
        seconds, produced = seconds + obs.round_seconds, produced + out
    return ks, seconds, produced


def test_auto_chooses_target_only_for_a_useless_drafter_and_probes_within_budget() -> None:
    policy = CostModelLookahead(CostEstimates(), k_max=8, probe_budget=0.03, probe_k=2)
    ks, seconds, produced = _ks_and_seconds(policy, USELESS, 2000)
    tail = ks[50:]
    assert tail.count(0) > 0.95 * len(tail)
    assert any(k > 0 for k in tail), "the policy must re-probe the drafter"
    slowdown = (seconds / produced) * _ar(USELESS, produced) - 1.0
    assert slowdown < 0.03 + 0.01, slowdown  # the budget, plus the start-up rounds at k_initial


def test_probes_are_rarer_when_they_cost_more() -> None:
    cheap = SimulatedPair(acceptance=0.05, draft_step=0.01, verify_base=0.2, verify_per_token=0.02)
    dear = SimulatedPair(acceptance=0.05, draft_step=0.1, verify_base=0.2, verify_per_token=0.08)
    probes = {}
    for name, pair in (("cheap", cheap), ("dear", dear)):
        ks, _, _ = _ks_and_seconds(CostModelLookahead(CostEstimates(), k_max=8), pair, 3000)
        probes[name] = sum(1 for k in ks[50:] if k > 0)
    assert probes["cheap"] > 2 * probes["dear"] > 0, probes


def test_no_probes_without_budget() -> None:
    policy = CostModelLookahead(CostEstimates(), k_max=8, probe_budget=0.0)
    ks, _, _ = _ks_and_seconds(policy, USELESS, 500)
    assert all(k == 0 for k in ks[50:])


@dataclass
class BurstyPair:
    """A drafter that is right in stretches: per-token acceptance switches between two regimes."""

    base: SimulatedPair
    good: float = 0.9
    bad: float = 0.1
    switch: float = 0.03  # chance per output token of changing regime
    state_good: bool = False

    def round(self, k: int, rng: random.Random) -> tuple[int, RoundObservation]:
        pair = SimulatedPair(
            self.good if self.state_good else self.bad,
            self.base.draft_step,
            self.base.verify_base,
            self.base.verify_per_token,
            self.base.overhead,
        )
        out, obs = pair.round(k, rng)
        for _ in range(out):
            if rng.random() < self.switch:
                self.state_good = not self.state_good
        return out, obs


def test_auto_takes_the_good_stretches_of_a_bursty_drafter() -> None:
    """Mean acceptance 0.5 does not pay on this CPU-like pair, its good stretches do."""
    costs = SimulatedPair(acceptance=0.5, draft_step=0.1, verify_base=0.42, verify_per_token=0.1)
    bursty = BurstyPair(costs)
    policy = CostModelLookahead(CostEstimates(), k_max=8)
    rng = random.Random(3)
    produced, seconds = 0, 0.0
    while produced < 3000:
        out, obs = bursty.round(policy.decide(10_000).k, rng)
        policy.observe(obs)
        produced, seconds = produced + out, seconds + obs.round_seconds
    assert produced / seconds > 1.02 * _ar(costs, produced)


def test_estimates_are_shared_between_requests() -> None:
    shared = CostEstimates()
    first = CostModelLookahead(shared, k_max=8)
    rng = random.Random(2)
    for _ in range(30):
        first.observe(GPU_GOOD.round(first.decide(1000).k, rng)[1])
    second = CostModelLookahead(shared, k_max=8, k_initial=1)
    # The second request starts from the learned costs, not from k_initial.
    assert second.decide(1000).k > 1


def test_prefill_rounds_do_not_skew_the_verify_fit() -> None:
    estimates = CostEstimates()
    estimates.observe(
        RoundObservation(
            drafted=4,
            accepted=4,
            draft_seconds=0.1,
            draft_forwards=4,
            draft_computed_tokens=300,
            verify_seconds=5.0,
            verify_tokens=305,
            round_seconds=5.2,
        )
    )
    assert estimates.verify_seconds(1) is None
    assert estimates.draft_step_seconds is None


def _obs(
    drafted: int, accepted: int, verify_tokens: int = 1, verify_seconds: float = 0.5
) -> RoundObservation:
    return RoundObservation(
        drafted=drafted,
        accepted=accepted,
        draft_seconds=0.1 * drafted,
        draft_forwards=drafted,
        draft_computed_tokens=drafted + (1 if drafted else 0),
        verify_seconds=verify_seconds,
        verify_tokens=verify_tokens,
        round_seconds=0.1 * drafted + verify_seconds + 0.01,
    )


def test_two_stage_acceptance() -> None:
    assert Acceptance(0.5, 0.5).expected_output_tokens(2) == pytest.approx(expected_output_tokens(0.5, 2))
    assert Acceptance(0.0, 0.9).expected_output_tokens(6) == 1.0
    # First token accepted half the time, then the draft runs: 1 + 0.5 * (1 + 1 + 1) = 2.5.
    assert Acceptance(0.5, 1.0).expected_output_tokens(3) == pytest.approx(2.5)
    estimates = CostEstimates(prior_acceptance_trials=0.0, acceptance_decay=0.9)
    for drafted, accepted in ((4, 0), (4, 4), (4, 2)):
        estimates.observe(_obs(drafted, accepted, drafted + 1), regime="slem:greedy")
    rates = estimates.acceptance("slem:greedy")
    assert rates is not None
    # Decayed counts (0.9 per round): first-stage successes 0.9 + 1, trials 0.81 + 0.9 + 1.
    assert rates.first == pytest.approx(1.9 / 2.71)
    # Later stage: the full round gave 3 of 3 (decayed by 0.9), the last 1 success of 2 trials.
    assert rates.later == pytest.approx((0.9 * 3 + 1) / (0.9 * 3 + 2))
    assert rates.continuation == 1.0  # every round drafted all it was asked for


def test_a_drafter_that_stops_early_makes_long_lookaheads_cheap() -> None:
    estimates = CostEstimates(prior_acceptance_trials=0.0, acceptance_decay=1.0)
    stopped_early = dataclasses.replace(_obs(2, 1, 3), requested=6)  # drafted 2 of 6: 1 continue, 1 stop
    estimates.observe(stopped_early, regime="r")
    rates = estimates.acceptance("r")
    assert rates is not None and rates.continuation == pytest.approx(0.5)
    assert rates.expected_drafted(6) == pytest.approx(sum(0.5**j for j in range(6)))
    assert rates.expected_drafted(6) < 2.0
    # Output: 1 + first * (1 + (q * later) + ...), with first = 1 and later = 0 here.
    assert rates.expected_output_tokens(6) == pytest.approx(2.0)


def test_request_evidence_fades_over_target_only_rounds() -> None:
    shared = CostEstimates()
    for _ in range(40):
        shared.observe(_obs(4, 4, 5), regime="r")  # the deployment's drafter is good
    policy = CostModelLookahead(shared, k_max=4, regime="r")
    policy.observe(_obs(4, 0, 5))  # but this request's last draft failed
    failed = policy._acceptance().first
    for _ in range(20):
        policy.observe(_obs(0, 0))
    assert policy._acceptance().first > failed + 0.1


def test_acceptance_is_learned_per_regime() -> None:
    estimates = CostEstimates(prior_acceptance_trials=2.0)
    for _ in range(20):
        estimates.observe(_obs(4, 4, 5), regime="slem:greedy")
        estimates.observe(_obs(4, 0, 5), regime="tli:sampled")
    greedy, sampled = estimates.acceptance("slem:greedy"), estimates.acceptance("tli:sampled")
    assert greedy is not None and sampled is not None
    assert greedy.first > 0.85
    assert sampled.first < 0.15
    assert estimates.acceptance("sd:greedy") is None


def test_verify_costs_are_kept_per_width_and_interpolated() -> None:
    estimates = CostEstimates()
    assert estimates.verify_seconds(1) is None
    estimates.observe(_obs(0, 0, verify_tokens=1, verify_seconds=0.5))
    estimates.observe(_obs(4, 1, verify_tokens=5, verify_seconds=0.9))
    assert estimates.verify_seconds(1) == pytest.approx(0.5)
    assert estimates.verify_seconds(3) == pytest.approx(0.7)  # halfway between widths 1 and 5
    assert estimates.verify_seconds(9) == pytest.approx(0.9)  # beyond the widest: as the widest


def test_auto_stops_cross_vocabulary_drafts_at_low_drafter_confidence() -> None:
    settings = CoordinatorSettings(target_addresses=("127.0.0.1:1",), auto_confidence_threshold=0.4)
    request = LookaheadRequest(kind=LookaheadKind.AUTO, k=None, confidence_threshold=None)
    estimates = _measured_baseline(CostEstimates())
    cross = make_lookahead(request, settings, 8, estimates, Regime(AlgorithmName.SLEM, greedy=True))
    same = make_lookahead(request, settings, 8, estimates, Regime(AlgorithmName.SD, greedy=True))
    assert isinstance(cross, CostModelLookahead) and isinstance(same, CostModelLookahead)
    assert (cross.confidence_threshold, cross.regime) == (0.4, "slem:greedy")
    assert (same.confidence_threshold, same.regime) == (0.0, "sd:greedy")
    assert cross.decide(remaining_tokens=100).confidence_threshold == 0.4


@pytest.mark.parametrize(
    ("trained_k", "asked", "drafter_max", "expected"),
    [
        (8, None, 64, "disco:8"),  # plain disco: the draft length the classifier was trained on
        (8, 12, 64, "disco:12"),  # disco:K keeps K
        (20, None, 64, "disco:16"),  # at most max_lookahead_k
        (None, None, 64, "disco:16"),  # an artifact that does not say: max_lookahead_k, as before
        (8, None, 5, "disco:5"),  # and at most the drafter's own limit
    ],
)
def test_disco_caps_at_the_trained_draft_length_unless_the_request_sets_k(
    trained_k: int | None, asked: int | None, drafter_max: int, expected: str
) -> None:
    settings = CoordinatorSettings(target_addresses=("127.0.0.1:1",))
    assert settings.max_lookahead_k == 16
    classifier = StopClassifierRef("disco-c", 0.5, trained_k)
    request = LookaheadRequest(kind=LookaheadKind.DISCO, k=asked, confidence_threshold=None)
    regime = Regime(AlgorithmName.SD, greedy=True)
    policy = make_lookahead(request, settings, drafter_max, CostEstimates(), regime, classifier=classifier)
    assert policy.describe() == expected
    assert policy.decide(remaining_tokens=100).k == int(expected.partition(":")[2])
    auto = LookaheadRequest(kind=LookaheadKind.AUTO, k=None, confidence_threshold=None)
    with_classifier = make_lookahead(auto, settings, 64, CostEstimates(), regime, classifier=classifier)
    assert isinstance(with_classifier, CostModelLookahead) and with_classifier.k_max == 16  # auto: unchanged
    assert with_classifier.stop_classifier_k == min(trained_k or 16, 16)


def test_auto_with_a_stop_classifier_leaves_the_length_to_it_but_still_goes_target_only() -> None:
    """A round asks for the classifier's trained length (the classifier ends the draft) where a round
    that long beats a target-only step; otherwise auto's own k: on a pair whose verification grows fast
    with its width, and for a drafter that does not pay (target-only steps and probes of ``probe_k``)."""
    pair = SimulatedPair(acceptance=0.8, draft_step=0.03, verify_base=0.3, verify_per_token=0.01)
    policy = CostModelLookahead(CostEstimates(), k_max=12, stop_classifier_k=8)
    ks, _, _ = _ks_and_seconds(policy, pair, 200)
    plain, _, _ = _ks_and_seconds(CostModelLookahead(CostEstimates(), k_max=12), pair, 200)
    paying = ks[10:]
    assert set(paying) <= {0, 8} and paying.count(8) > 0.95 * len(paying)  # 0: a 1-token cost refresh
    assert sum(k != 8 for k in plain[10:]) > len(plain[10:]) / 2  # without it auto picks its own k
    assert policy.decide(remaining_tokens=4).k == 3  # within what is left
    wide = CostModelLookahead(CostEstimates(), k_max=12, stop_classifier_k=8)
    assert max(_ks_and_seconds(wide, CPU_CODER, 200)[0][10:]) < 8  # 8 tokens verify too slowly there
    useless = CostModelLookahead(CostEstimates(), k_max=12, probe_budget=0.03, probe_k=2, stop_classifier_k=8)
    tail = _ks_and_seconds(useless, USELESS, 2000)[0][50:]
    assert tail.count(0) > 0.95 * len(tail) and set(tail) <= {0, 1, 2}  # never the classifier's 8


def _measured_baseline(estimates: CostEstimates, seconds: float = 0.5) -> CostEstimates:
    for _ in range(estimates.baseline_samples):
        estimates.observe(_obs(0, 0, verify_seconds=seconds))
    return estimates


def test_a_cold_first_forward_does_not_skew_the_verify_costs() -> None:
    estimates = CostEstimates()
    for seconds in (1.35, 0.5, 0.52):  # the first forward of a fresh process pays kernel set-up
        estimates.observe(_obs(0, 0, verify_seconds=seconds))
    assert estimates.verify_seconds(1) == pytest.approx(0.52)


def test_the_one_token_cost_is_measured_first_and_kept_fresh() -> None:
    """A policy that always speculates would never re-measure the yardstick of its decisions (a cold
    first measurement made speculation look good for good): it is measured before any speculation and
    again every ``baseline_refresh_rounds`` rounds, by one request at a time."""
    estimates = CostEstimates(baseline_refresh_rounds=20)
    policy = CostModelLookahead(estimates, k_max=8)
    rng = random.Random(4)
    ks = []
    for _ in range(100):
        k = policy.decide(10_000).k
        ks.append(k)
        policy.observe(GPU_GOOD.round(k, rng)[1])
    assert ks[:3] == [0, 0, 0]  # the baseline before any speculation
    assert all(k > 0 for k in ks[3:23])  # speculation pays on this pair
    refreshes = [i for i, k in enumerate(ks) if k == 0 and i >= 3]
    assert len(refreshes) == 4, refreshes  # one target-only round per 20 speculative ones
    estimates.observe(_obs(0, 0))  # measured now
    for _ in range(19):
        estimates.observe(GPU_GOOD.round(4, rng)[1])
    assert estimates.claim_baseline_round() is False
    estimates.observe(GPU_GOOD.round(4, rng)[1])
    assert CostModelLookahead(estimates, k_max=8).decide(10_000).k == 0  # one request claims it ...
    assert policy.decide(10_000).k > 0  # ... and the others keep speculating


def _useless_regime(estimates: CostEstimates, regime: str) -> None:
    """Shared evidence that speculation does not pay in ``regime`` (and measured drafter costs)."""
    for _ in range(30):
        estimates.observe(_obs(2, 0, verify_tokens=3, verify_seconds=0.7), regime=regime)


def test_probe_credit_is_shared_by_the_requests_of_a_regime() -> None:
    estimates = _measured_baseline(CostEstimates())
    _useless_regime(estimates, "tli:sampled")
    _useless_regime(estimates, "slem:sampled")
    saver = CostModelLookahead(estimates, k_max=4, regime="tli:sampled", probe_budget=0.05)
    for _ in range(40):
        saver.observe(_obs(0, 0))  # target-only rounds earn credit
    assert estimates.credit("tli:sampled") > 0 == estimates.credit("slem:sampled")
    # A new request of the regime may probe at once, out of what the first one saved ...
    assert CostModelLookahead(estimates, k_max=4, regime="tli:sampled").decide(10_000).k == 2
    # ... the credit funds at most ``credit_probes`` (2) concurrent probes; other regimes have nothing.
    assert CostModelLookahead(estimates, k_max=4, regime="tli:sampled").decide(10_000).k == 2
    assert CostModelLookahead(estimates, k_max=4, regime="tli:sampled").decide(10_000).k == 0
    assert CostModelLookahead(estimates, k_max=4, regime="slem:sampled").decide(10_000).k == 0


def test_a_probe_is_priced_with_the_drafter_catch_up() -> None:
    estimates = _measured_baseline(CostEstimates())
    _useless_regime(estimates, "r")
    prompt_catch_up = dataclasses.replace(_obs(2, 0, 3, 0.7), draft_computed_tokens=202, draft_seconds=0.6)
    estimates.observe(prompt_catch_up, regime="r")  # 200 tokens of catch-up took 0.4 s beyond 2 steps
    assert estimates.catch_up_seconds_per_token == pytest.approx(0.4 / 200)

    def rounds_until_probe(lag: int) -> int:
        estimates.book_credit("r", -estimates.credit("r"), cap=0.0)  # start from no credit
        policy = CostModelLookahead(estimates, k_max=4, regime="r", probe_budget=0.05)
        for rounds in range(1000):
            if policy.decide(10_000, drafter_lag=lag).k > 0:
                return rounds
            policy.observe(_obs(0, 0))  # earns 0.05 * 0.51 s
        raise AssertionError("no probe")

    near, far = rounds_until_probe(3), rounds_until_probe(300)
    assert far - near >= 0.9 * (0.4 / 200 * 297) / (0.05 * 0.51), (near, far)


def test_a_losing_stretch_delays_probes_but_does_not_stop_them() -> None:
    estimates = _measured_baseline(CostEstimates())
    _useless_regime(estimates, "r")
    policy = CostModelLookahead(estimates, k_max=4, regime="r", probe_budget=0.05)
    policy.observe(dataclasses.replace(_obs(2, 0, 3, 0.7), round_seconds=30.0))  # a disastrous round
    loss = policy._expected_loss(2)
    assert loss is not None and estimates.credit("r") == pytest.approx(-2 * loss)  # debt stops at the cap
    rounds = 0
    while policy.decide(10_000).k == 0:
        policy.observe(_obs(0, 0))
        rounds += 1
    assert rounds == pytest.approx(3 * loss / (0.05 * 0.51), abs=2)  # the debt, then one probe's price


def test_auto_prices_a_model_free_drafter_by_its_call_time_per_draft_token() -> None:
    """A lookup drafter runs no forwards: its step cost is its call's time per draft token, and a round
    that asked for a draft and got none (no match) is not target-only overhead."""
    estimates = CostEstimates(baseline_samples=1)
    for _ in range(3):
        estimates.observe(_obs(0, 0))  # target-only rounds: 0.5 s a step, 0.01 s overhead
    lookup = RoundObservation(
        drafted=4,
        accepted=3,
        draft_seconds=0.0002,
        draft_forwards=0,
        draft_computed_tokens=7,
        verify_seconds=0.6,
        verify_tokens=5,
        round_seconds=0.62,
        requested=4,
    )
    estimates.observe(lookup)
    assert estimates.draft_step_seconds == pytest.approx(0.00005)
    no_match = dataclasses.replace(
        lookup, drafted=0, accepted=0, draft_seconds=0.0001, verify_tokens=1, round_seconds=0.9
    )
    estimates.observe(no_match)
    assert estimates.ar_overhead_seconds == pytest.approx(0.01)
    auto = CostModelLookahead(estimates, k_max=8)
    assert auto.decide(remaining_tokens=100).k > 1, (
        "a nearly free drafter accepted 3 of 4 pays for long drafts"
    )
