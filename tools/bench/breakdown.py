"""Where the time of a round goes, and the speedup the measured acceptance and step costs allow.

Per configuration, from the coordinator's per-request sums (``GenerationStats``: the services' reported
compute and each call's send-to-reply time): mean seconds per round of drafter compute, target compute,
wire + queue (calls - compute) and the coordinator's own work (total - calls). Under DSI calls overlap, so
only the compute means are meaningful; the rest is reported as overlapped.

The ideal speedup over target-only decoding is what the measured acceptance and step costs allow with
no orchestration at all: the output tokens a round yields, times the target's compute per token under
target-only decoding (the services' ``ar`` at the same temperature), over the drafter's and the target's
compute per round. It takes every cost as measured (a verification of k + 1 tokens costs what it costs,
not one single-token step) and the measured tokens per round (no i.i.d. acceptance assumed). The
orchestration overhead is ``1 - measured speedup / ideal speedup``: what wire, queueing and the
coordinator cost. ``model_speedup`` keeps SI's speedup in the model of ``coordinator.dsimodel.offline``
(``si_latency``: a target forward costs 1 whatever it verifies, acceptance i.i.d. per token) for
comparison. Under DSI the compute overlaps, so neither applies (the DSI bench compares with its event
model instead).
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
    """Tokens per round x target-only compute per token / compute per round (SI; None under DSI)."""
    model_speedup: float | None
    """SI's speedup in the offline model at the measured acceptance, draft length and ``c``."""
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
    output_tokens: int
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


ZERO_TOTALS = RoundTotals(0, 0.0, 0, 0, 0, 0, 0, 0.0, 0.0, 0.0, 0.0, overlapped=False)


def _per(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


_RECORD_SUMS = (
    "rounds",
    "output_tokens",
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


def summed_totals(records: Sequence[PromptRecord]) -> RoundTotals | None:
    """The records' totals summed; None unless every record reports its calls' times."""
    totals = [prompt_totals(r) for r in records]
    if not totals or any(t is None for t in totals):
        return None
    return sum((t for t in totals if t is not None), start=ZERO_TOTALS)


def target_step_seconds(baseline: RoundTotals | None) -> float | None:
    """Target compute per output token of target-only decoding (None: not measured)."""
    if baseline is None or baseline.target_compute_seconds <= 0:
        return None
    return _per(baseline.target_compute_seconds, baseline.output_tokens)


def round_breakdown(
    records: Sequence[PromptRecord], measured_speedup: float | None, target_step: float | None = None
) -> RoundBreakdown | None:
    """The breakdown of a configuration's records; None unless every record reports its calls' times.
    ``target_step``: target-only decoding's target compute per token (``target_step_seconds``)."""
    totals = summed_totals(records)
    return None if totals is None else breakdown_of(totals, measured_speedup, target_step)


def _ideal(totals: RoundTotals, target_step: float | None) -> float | None:
    compute = totals.drafter_compute_seconds + totals.target_compute_seconds
    if totals.overlapped or target_step is None or compute <= 0 or not totals.rounds:
        return None
    return totals.output_tokens * target_step / compute


def breakdown_of(
    totals: RoundTotals, measured_speedup: float | None, target_step: float | None = None
) -> RoundBreakdown | None:
    """The breakdown of a configuration's totals; None when it ran no round."""
    rounds = totals.rounds
    if not rounds:
        return None
    compute = totals.drafter_compute_seconds + totals.target_compute_seconds
    calls = totals.drafter_call_seconds + totals.target_call_seconds
    drafter_forward = _per(totals.drafter_compute_seconds, totals.drafter_forwards)
    target_forward = _per(totals.target_compute_seconds, totals.target_forwards)
    cost = None if drafter_forward is None or not target_forward else drafter_forward / target_forward
    acceptance = _per(totals.accepted_tokens, totals.draft_tokens)
    model = (
        None
        if cost is None or acceptance is None
        else ideal_speedup(acceptance, totals.draft_tokens / rounds, cost)
    )
    ideal = _ideal(totals, target_step)
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
        model_speedup=model,
        measured_speedup=measured_speedup,
        overhead=None if ideal is None or measured_speedup is None else 1.0 - measured_speedup / ideal,
    )
