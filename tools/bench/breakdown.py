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
from dataclasses import dataclass, fields
from typing import Any

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


@dataclass(frozen=True)
class RoundTotals:
    """One configuration's sums over its requests (``GenerationStats``), what the breakdown needs."""

    rounds: int
    seconds: float
    drafter_forwards: int
    target_forwards: int
    draft_tokens: int
    accepted_tokens: int
    drafter_compute_seconds: float
    target_compute_seconds: float
    drafter_call_seconds: float
    target_call_seconds: float
    overlapped: bool

    def __add__(self, other: RoundTotals) -> RoundTotals:
        sums: dict[str, Any] = {f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        sums["overlapped"] = self.overlapped or other.overlapped
        return RoundTotals(**sums)


ZERO_TOTALS = RoundTotals(0, 0.0, 0, 0, 0, 0, 0.0, 0.0, 0.0, 0.0, overlapped=False)


def _per(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


_RECORD_SUMS = (
    "rounds",
    "drafter_forwards",
    "target_forwards",
    "draft_tokens",
    "accepted_tokens",
    "drafter_compute_seconds",
    "target_compute_seconds",
    "drafter_call_seconds",
    "target_call_seconds",
)


def prompt_totals(record: PromptRecord) -> RoundTotals | None:
    """A services record's totals; None when it lacks some (older coordinators, transformers)."""
    values: dict[str, Any] = {name: getattr(record, name) for name in _RECORD_SUMS}
    if any(value is None for value in values.values()):
        return None
    return RoundTotals(seconds=record.seconds, overlapped=record.scheduler_ran == "dsi", **values)


def round_breakdown(records: Sequence[PromptRecord], measured_speedup: float | None) -> RoundBreakdown | None:
    """The breakdown of a configuration's records; None unless every record reports its calls' times."""
    totals = [prompt_totals(r) for r in records]
    if not totals or any(t is None for t in totals):
        return None
    return breakdown_of(sum((t for t in totals if t is not None), start=ZERO_TOTALS), measured_speedup)


def breakdown_of(totals: RoundTotals, measured_speedup: float | None) -> RoundBreakdown | None:
    """The breakdown of a configuration's totals; None when it ran no round."""
    rounds = totals.rounds
    if not rounds:
        return None
    compute = totals.drafter_compute_seconds + totals.target_compute_seconds
    calls = totals.drafter_call_seconds + totals.target_call_seconds
    drafter_step = _per(totals.drafter_compute_seconds, totals.drafter_forwards)
    target_step = _per(totals.target_compute_seconds, totals.target_forwards)
    cost = None if drafter_step is None or not target_step else drafter_step / target_step
    acceptance = _per(totals.accepted_tokens, totals.draft_tokens)
    ideal = (
        None
        if cost is None or acceptance is None
        else ideal_speedup(acceptance, totals.draft_tokens / rounds, cost)
    )
    overlapped = totals.overlapped
    return RoundBreakdown(
        rounds=rounds,
        drafter_compute_seconds=totals.drafter_compute_seconds / rounds,
        target_compute_seconds=totals.target_compute_seconds / rounds,
        wire_seconds=None if overlapped else (calls - compute) / rounds,
        coordinator_seconds=None if overlapped else (totals.seconds - calls) / rounds,
        overlapped=overlapped,
        drafter_cost=cost,
        ideal_speedup=ideal,
        measured_speedup=measured_speedup,
        overhead=None if ideal is None or measured_speedup is None else 1.0 - measured_speedup / ideal,
    )
