"""Where the time of a round goes, and the speedup the measured acceptance and step costs allow.

Per configuration, from the coordinator's per-request sums (``GenerationStats``: the services' reported
compute and each call's send-to-reply time): mean seconds per round of drafter compute, target compute,
wire + queue (calls - compute) and the coordinator's own work (total - calls). Under DSI calls overlap, so
only the compute means are meaningful; the rest is reported as overlapped.

The ideal speedup over target-only decoding is SI's in the model of ``coordinator.dsimodel.offline``
(``si_latency``): a round of ``k`` drafter forwards and one target forward costs ``k * c + 1`` target
forwards and yields ``(1 - a**(k+1)) / (1 - a)`` tokens, with ``a`` the measured acceptance, ``k`` the mean
draft length and ``c`` the drafter's compute per forward over the target's. The orchestration overhead is
``1 - measured speedup / ideal speedup``: what wire, queueing and the coordinator cost against the model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from coordinator.dsimodel.offline import MAX_LOOKAHEAD, si_latency
from tools.bench.records import PromptRecord

# The acceptance a drafter equal to its target measures (1.0) is clamped below 1, where the model is defined.
_MAX_ACCEPTANCE = 1.0 - 1e-9


@dataclass(frozen=True)
class RoundBreakdown:
    """Mean seconds per round of one configuration, and its ideal speedup (None where not measured)."""

    rounds: int
    drafter_compute_seconds: float
    target_compute_seconds: float
    wire_seconds: float | None
    """Drafter and target calls' wall time minus their compute: wire, queueing, (de)serialisation (SI)."""
    coordinator_seconds: float | None
    """Generation time minus the calls' wall time: the coordinator's own work between calls (SI)."""
    overlapped: bool
    """Some request ran under DSI: its calls overlap, so wire and coordinator shares are not separable."""
    drafter_cost: float | None
    """``c``: the drafter's compute per forward over the target's."""
    ideal_speedup: float | None
    measured_speedup: float | None
    """The configuration's tokens/s over the services' ar at the same temperature."""
    overhead: float | None
    """``1 - measured / ideal``: the share of the ideal speedup orchestration costs."""


def ideal_speedup(acceptance: float, draft_length: float, drafter_cost: float) -> float | None:
    """``1 / si_latency(c, a, k)``, linear between the integers around a fractional mean draft length
    ``k``; None when nothing was drafted (``k < 1``) or the drafter's cost is unknown (``c <= 0``)."""
    if draft_length < 1 or drafter_cost <= 0 or not math.isfinite(drafter_cost):
        return None
    a = min(max(acceptance, 0.0), _MAX_ACCEPTANCE)
    k = min(draft_length, float(MAX_LOOKAHEAD))
    low = math.floor(k)
    high = min(low + 1, MAX_LOOKAHEAD)
    at_low = 1.0 / si_latency(drafter_cost, a, low)
    at_high = 1.0 / si_latency(drafter_cost, a, high)
    return at_low + (k - low) * (at_high - at_low)


def _sum(values: Sequence[float | int | None]) -> float | None:
    """The sum, or None when some record lacks the value."""
    if any(value is None for value in values):
        return None
    return float(sum(value for value in values if value is not None))


def _per(numerator: float | None, denominator: float | None) -> float | None:
    return None if numerator is None or not denominator else numerator / denominator


def round_breakdown(records: Sequence[PromptRecord], measured_speedup: float | None) -> RoundBreakdown | None:
    """The breakdown of a configuration's records; None unless every record reports its calls' times."""
    rounds = _sum([r.rounds for r in records])
    drafter_compute = _sum([r.drafter_compute_seconds for r in records])
    target_compute = _sum([r.target_compute_seconds for r in records])
    drafter_calls = _sum([r.drafter_call_seconds for r in records])
    target_calls = _sum([r.target_call_seconds for r in records])
    if not rounds or None in (drafter_compute, target_compute, drafter_calls, target_calls):
        return None
    assert drafter_compute is not None and target_compute is not None
    assert drafter_calls is not None and target_calls is not None
    calls = drafter_calls + target_calls
    overlapped = any(r.scheduler_ran == "dsi" for r in records)
    seconds = sum(r.seconds for r in records)
    cost = _per(
        _per(drafter_compute, _sum([r.drafter_forwards for r in records])),
        _per(target_compute, _sum([r.target_forwards for r in records])),
    )
    drafted, accepted = _sum([r.draft_tokens for r in records]), _sum([r.accepted_tokens for r in records])
    draft_length = _per(drafted, rounds)
    acceptance = _per(accepted, drafted)
    ideal = (
        None
        if cost is None or draft_length is None or acceptance is None
        else ideal_speedup(acceptance, draft_length, cost)
    )
    return RoundBreakdown(
        rounds=int(rounds),
        drafter_compute_seconds=drafter_compute / rounds,
        target_compute_seconds=target_compute / rounds,
        wire_seconds=None if overlapped else (calls - drafter_compute - target_compute) / rounds,
        coordinator_seconds=None if overlapped else (seconds - calls) / rounds,
        overlapped=overlapped,
        drafter_cost=cost,
        ideal_speedup=ideal,
        measured_speedup=measured_speedup,
        overhead=None if ideal is None or measured_speedup is None else 1.0 - measured_speedup / ideal,
    )
