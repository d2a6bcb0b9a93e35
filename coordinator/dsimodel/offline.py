"""The paper's offline model of SI, DSI and target-only decoding, as exact long-run expectations.

Timor et al., "Distributed Speculative Inference" (ICLR 2025), simulate with constant latencies: a
target forward takes 1 time unit whatever it verifies, a drafter forward takes ``c``, each draft token
is accepted with probability ``a`` independently of the others (i.i.d. acceptance), ``k`` draft tokens
per verification, and enough target servers that a verification never waits. Their simulator samples
1000-token generations; here the same model is solved exactly for the long run (renewal-reward: the
expected cost of a cycle over its expected output tokens).

- **non-SI** (target only): 1 time unit per token.
- **SI**: a round drafts ``k`` tokens (``k * c``) and verifies them (1); it outputs the accepted tokens
  plus one (recovered or bonus), ``min(G, k) + 1`` where ``G`` is geometric, ``P(G >= j) = a**j``.
- **DSI**: the drafter never waits; every block of ``k`` draft tokens is verified on a server of its own
  while the drafter drafts on. A cycle runs from one rejection to the next: ``J`` blocks, the last one
  with ``m < k`` accepted tokens. It outputs ``(J - 1) * k + m + 1`` tokens and, drafting being the only
  sequential work, costs ``J * k * c + 1`` (the last block's drafting and its verification), except that
  a cycle whose first draft token is rejected costs 1: the target already decodes from the corrected
  prefix while the drafter starts again. The paper also keeps the target decoding on the verified
  prefix, so a cycle costs no more than its tokens at one unit each: cost = min(drafting + 1, tokens).
  The servers this needs: ``ceil(1 / (k * c))`` (the paper's condition for no verification to wait).

The paper's counting (kept here): a fully accepted block outputs its ``k`` draft tokens and no bonus
token (the next block, verified in parallel, decides the next position).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from core.errors import InvalidArgumentError

# Largest lookahead the tools search; the paper's grids use k <= 20.
MAX_LOOKAHEAD = 20


@dataclass(frozen=True)
class OfflinePoint:
    """The three latencies per output token (target forward = 1) at one (c, a, k) and their ratios."""

    drafter_cost: float
    acceptance: float
    lookahead: int
    servers_required: int
    nonsi_latency: float
    si_latency: float
    dsi_latency: float

    @property
    def si_vs_nonsi(self) -> float:
        """SI's speed over target-only decoding's (above 1: SI is faster)."""
        return self.nonsi_latency / self.si_latency

    @property
    def dsi_vs_nonsi(self) -> float:
        return self.nonsi_latency / self.dsi_latency

    @property
    def dsi_vs_si(self) -> float:
        return self.si_latency / self.dsi_latency


def check_inputs(drafter_cost: float, acceptance: float, lookahead: int | None = None) -> None:
    """Raises ``InvalidArgumentError`` naming the field unless 0 < c, 0 <= a < 1 and 1 <= k."""
    if not (math.isfinite(drafter_cost) and drafter_cost > 0):
        raise InvalidArgumentError("drafter_cost", f"must be a finite number > 0, got {drafter_cost}")
    if not (0.0 <= acceptance < 1.0):
        raise InvalidArgumentError("acceptance", f"must be in [0, 1), got {acceptance}")
    if lookahead is not None and not (1 <= lookahead <= MAX_LOOKAHEAD):
        raise InvalidArgumentError("lookahead", f"must be in [1, {MAX_LOOKAHEAD}], got {lookahead}")


def expected_round_tokens(acceptance: float, lookahead: int) -> float:
    """E[min(G, k) + 1]: output tokens of an SI round, ``(1 - a**(k+1)) / (1 - a)``."""
    check_inputs(1.0, acceptance, lookahead)
    return sum(acceptance**j for j in range(lookahead + 1))


def si_latency(drafter_cost: float, acceptance: float, lookahead: int) -> float:
    """Time per output token of SI: a round's cost ``k * c + 1`` over its expected tokens."""
    check_inputs(drafter_cost, acceptance, lookahead)
    return (lookahead * drafter_cost + 1.0) / expected_round_tokens(acceptance, lookahead)


def servers_required(drafter_cost: float, lookahead: int) -> int:
    """``ceil(1 / (k * c))``: target servers for DSI's verifications never to wait (at least 1)."""
    check_inputs(drafter_cost, 0.0, lookahead)
    # A hair below an integer is that integer: 1 / (2 * 0.05) is 10.000000000000002 in floats.
    return max(1, math.ceil(1.0 / (lookahead * drafter_cost) - 1e-9))


def dsi_latency(drafter_cost: float, acceptance: float, lookahead: int) -> float:
    """Time per output token of DSI in the paper's model (enough servers), exact in the long run."""
    check_inputs(drafter_cost, acceptance, lookahead)
    c, a, k = drafter_cost, acceptance, lookahead
    if c >= 1.0:
        return 1.0  # drafting + 1 never undercuts the tokens: every cycle runs at the target's pace
    block_accepted = a**k  # a block's k draft tokens all accepted: the cycle goes on
    cost = tokens = 0.0
    for m in range(k):  # the cycle's last block accepts m < k draft tokens
        weight = a**m * (1.0 - a)
        cost += weight * _cycle_cost(c, k, m, block_accepted)
        tokens += weight * (k * block_accepted / (1.0 - block_accepted) + m + 1) / (1.0 - block_accepted)
    return cost / tokens


def _cycle_cost(c: float, k: int, m: int, p: float) -> float:
    """Sum over J >= 1 of p**(J-1) * min(J*k*c + 1, (J-1)*k + m + 1) (J = 1, m = 0 costs 1 either way).

    Drafting undercuts the tokens from ``J = ceil((k - m) / (k * (1 - c)))`` on; the tail is geometric.
    """
    threshold = max(1, math.ceil((k - m) / (k * (1.0 - c)) - 1e-12))
    head = sum(p ** (j - 1) * ((j - 1) * k + m + 1) for j in range(1, threshold))
    tail_weight = p ** (threshold - 1) / (1.0 - p)  # sum of p**(j-1) for j >= threshold
    tail_j = p ** (threshold - 1) * (threshold * (1.0 - p) + p) / (1.0 - p) ** 2  # sum of j * p**(j-1)
    return head + k * c * tail_j + tail_weight


def offline_point(drafter_cost: float, acceptance: float, lookahead: int) -> OfflinePoint:
    """non-SI, SI and DSI at one (c, a, k) of the paper's model."""
    return OfflinePoint(
        drafter_cost=drafter_cost,
        acceptance=acceptance,
        lookahead=lookahead,
        servers_required=servers_required(drafter_cost, lookahead),
        nonsi_latency=1.0,
        si_latency=si_latency(drafter_cost, acceptance, lookahead),
        dsi_latency=dsi_latency(drafter_cost, acceptance, lookahead),
    )


def best_offline_point(
    drafter_cost: float, acceptance: float, servers: int, max_lookahead: int = MAX_LOOKAHEAD
) -> tuple[OfflinePoint, OfflinePoint] | None:
    """(the k fastest for SI, the k fastest for DSI among those ``servers`` suffice for), or None if none.

    As the paper's heatmaps: each algorithm at its own best k. SI needs one server; DSI's k ranges over
    ``servers_required(c, k) <= servers``.
    """
    if servers < 1:
        raise InvalidArgumentError("servers", f"must be >= 1, got {servers}")
    check_inputs(drafter_cost, acceptance, max_lookahead)
    points = [offline_point(drafter_cost, acceptance, k) for k in range(1, max_lookahead + 1)]
    feasible = [point for point in points if point.servers_required <= servers]
    if not feasible:
        return None
    best_si = min(points, key=lambda point: point.si_latency)
    best_dsi = min(feasible, key=lambda point: point.dsi_latency)
    return best_si, best_dsi
