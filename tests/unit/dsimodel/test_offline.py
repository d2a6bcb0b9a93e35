"""The paper's model (``coordinator.dsimodel.offline``): published numbers and the DSI theorem on a grid."""

from __future__ import annotations

import random

import pytest

from coordinator.dsimodel.offline import (
    best_offline_point,
    dsi_latency,
    expected_round_tokens,
    offline_point,
    servers_required,
    si_latency,
)
from core.errors import InvalidArgumentError

GRID_C = (0.01, 0.05, 0.1, 0.13, 0.3, 0.5, 0.8, 1.0)
GRID_A = (0.0, 0.1, 0.3, 0.5, 0.75, 0.9, 0.99)


def test_published_settings() -> None:
    """c=0.5, a=0.3, k=2: SI 0.695x and DSI 1.021x of non-SI (exact to 3 places). c=0.1, a=0.9, k=5: DSI
    1.46x SI from 1000-token runs; the long-run value is 1.475 (the runs' last, truncated blocks lower
    it), so 1.5% tolerance."""
    slow = offline_point(0.5, 0.3, 2)
    assert slow.si_vs_nonsi == pytest.approx(0.695, abs=5e-4)
    assert slow.dsi_vs_nonsi == pytest.approx(1.021, abs=5e-4)
    assert offline_point(0.1, 0.9, 5).dsi_vs_si == pytest.approx(1.46, rel=0.015)


def test_dsi_never_slower_than_si_or_target_only() -> None:
    """The paper's theorem over a grid of (c, a, k), with the servers it needs."""
    for c in GRID_C:
        for a in GRID_A:
            for k in (1, 2, 3, 5, 8, 20):
                point = offline_point(c, a, k)
                assert point.dsi_latency <= min(point.si_latency, 1.0) + 1e-12, (c, a, k)


def _sampled_dsi(c: float, a: float, k: int, cycles: int, rng: random.Random) -> float:
    """The model's cycles drawn one by one: cost and tokens summed, then divided."""
    cost = tokens = 0.0
    for _ in range(cycles):
        blocks = 1
        while True:
            accepted = 0
            while accepted < k and rng.random() < a:
                accepted += 1
            if accepted < k:
                break
            blocks += 1
        drafting = 0.0 if blocks == 1 and accepted == 0 else blocks * k * c
        cycle_tokens = (blocks - 1) * k + accepted + 1
        cost += min(drafting + 1.0, cycle_tokens)
        tokens += cycle_tokens
    return cost / tokens


@pytest.mark.parametrize(("c", "a", "k"), [(0.5, 0.3, 2), (0.1, 0.9, 5), (0.13, 0.75, 3), (0.05, 0.6, 4)])
def test_exact_dsi_matches_sampled_cycles(c: float, a: float, k: int) -> None:
    """The closed form equals the cycle model sampled 20000 times (seeded) within 1.5%."""
    sampled = _sampled_dsi(c, a, k, 20000, random.Random(12))
    assert dsi_latency(c, a, k) == pytest.approx(sampled, rel=0.015)


def test_si_round_and_servers() -> None:
    assert expected_round_tokens(0.5, 2) == pytest.approx(1.75)
    assert si_latency(0.1, 0.0, 3) == pytest.approx(1.3)  # nothing accepted: one token per round
    assert servers_required(0.1, 5) == 2
    assert servers_required(0.05, 2) == 10  # 1 / 0.1 is 10 up to rounding
    assert servers_required(1.0, 1) == 1
    assert dsi_latency(1.0, 0.9, 4) == 1.0  # a drafter as slow as the target: DSI decodes at its pace


def test_dsi_latency_decreases_with_acceptance() -> None:
    for c in (0.05, 0.3):
        latencies = [dsi_latency(c, a, 4) for a in GRID_A]
        assert latencies == sorted(latencies, reverse=True)


def test_best_point_respects_servers() -> None:
    best = best_offline_point(0.13, 0.75, servers=2)
    assert best is not None
    si, dsi = best
    assert si.lookahead == 4 and dsi.servers_required <= 2
    assert best_offline_point(0.01, 0.5, servers=1, max_lookahead=20) is None  # needs k >= 100


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: si_latency(0.0, 0.5, 2), "drafter_cost"),
        (lambda: si_latency(float("nan"), 0.5, 2), "drafter_cost"),
        (lambda: dsi_latency(0.1, 1.0, 2), "acceptance"),
        (lambda: dsi_latency(0.1, -0.1, 2), "acceptance"),
        (lambda: offline_point(0.1, 0.5, 0), "lookahead"),
        (lambda: best_offline_point(0.1, 0.5, servers=0), "servers"),
    ],
)
def test_bad_input_names_the_field(call: object, field: str) -> None:
    with pytest.raises(InvalidArgumentError) as raised:
        call()  # type: ignore[operator]
    assert raised.value.field == field
