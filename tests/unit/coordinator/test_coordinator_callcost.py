"""Per-call timeouts follow the measured cost of forwards, the tokens to compute and the queue ahead."""

from __future__ import annotations

import pytest

from coordinator.callcost import CallCosts, CallWork, TimeoutRule
from core.modelcalls import ForwardStats

RULE = TimeoutRule(factor=4.0, floor=0.5, cap=60.0)


def decode(seconds: float, forwards: int = 1) -> ForwardStats:
    return ForwardStats(computed_tokens=forwards, forwards=forwards, compute_seconds=seconds)


def test_unmeasured_calls_get_the_cap() -> None:
    costs = CallCosts(RULE)
    assert costs.timeout(CallWork(1, 1)) == 60.0
    costs.observe(ForwardStats())  # a call that computed nothing teaches nothing
    assert costs.expected_seconds(CallWork(1, 1)) is None


def test_decode_steps_set_the_timeout_of_a_step() -> None:
    costs = CallCosts(RULE)
    for _ in range(20):
        costs.observe(decode(0.3))
    step = costs.step_seconds()
    assert step == pytest.approx(0.3)
    # No prefill measured yet: a token is priced at a quarter of a step.
    assert costs.expected_seconds(CallWork(1, 1)) == pytest.approx(0.3 + 0.075)
    assert costs.timeout(CallWork(1, 1)) == pytest.approx(4 * 0.375)
    # Five drafter forwards cost five steps; queued calls ahead multiply the wait.
    assert costs.timeout(CallWork(5, 5)) == pytest.approx(4 * (5 * 0.3 + 5 * 0.075))
    assert costs.timeout(CallWork(1, 1), queued_ahead=2) == pytest.approx(3 * 4 * 0.375)


def test_prefills_price_tokens_and_long_prompts_get_long_timeouts() -> None:
    costs = CallCosts(RULE)
    for _ in range(10):
        costs.observe(decode(0.2))
        costs.observe(ForwardStats(computed_tokens=1000, forwards=1, compute_seconds=2.2))
    assert costs.token_seconds() == pytest.approx(0.002)
    assert costs.expected_seconds(CallWork(1, 1000)) == pytest.approx(0.2 + 2.0)
    assert costs.timeout(CallWork(1, 5000)) == pytest.approx(4 * (0.2 + 10.0))
    assert costs.timeout(CallWork(1, 100_000)) == 60.0  # the cap


def test_a_high_quantile_errs_long_and_the_floor_holds() -> None:
    costs = CallCosts(RULE)
    for seconds in [0.01] * 9 + [0.05]:
        costs.observe(decode(seconds))
    assert costs.step_seconds() == pytest.approx(0.05)  # the slow tail sets the estimate
    assert costs.timeout(CallWork(1, 1)) == 0.5  # 4 x 0.0625 is under the floor
