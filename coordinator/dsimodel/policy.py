"""The scheduler's choice from measured costs: DSI with which knobs, SI, or target-only decoding.

``choose_schedule(c, a, servers)`` evaluates the event model (``events``) over a grid of knobs (block
size, depth, plain steps) and compares the fastest with SI at its best lookahead and with target-only
decoding (both exact, ``offline``). DSI is chosen only when it beats both by ``margin`` (the
Monte-Carlo estimate's noise and the orchestration a real scheduler adds). The choice depends on the
measured costs and acceptance only, never on a request's draws.

Search: every candidate runs a short screening simulation on the same seed (common random numbers,
so differences between knobs are not drowned in noise); the best few run again, longer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from coordinator.dsimodel.events import EventResult, EventSetting, SchedulerKnobs, simulate_events
from coordinator.dsimodel.offline import MAX_LOOKAHEAD, check_inputs, si_latency
from core.errors import InvalidArgumentError

Scheduler = Literal["dsi", "si", "target-only"]


@dataclass(frozen=True)
class SearchBudget:
    """Simulated output tokens per stage of the knob search (about 20 us each on one core)."""

    screen_tokens: int = 400  # every candidate, one seed shared by all
    refined: int = 4  # the best screened candidates measured again
    refine_tokens: int = 3000
    final_tokens: int = 10000  # the winner once more on a fresh seed: its estimate is not a minimum

    def __post_init__(self) -> None:
        for name in ("screen_tokens", "refined", "refine_tokens", "final_tokens"):
            if getattr(self, name) < 1:
                raise InvalidArgumentError(name, f"must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class ScheduleChoice:
    """What to run and the model's expected time per output token for it and for the alternatives."""

    scheduler: Scheduler
    dsi: EventResult  # the fastest DSI knobs found (even when not chosen)
    si_lookahead: int
    si_latency: float  # exact, at ``si_lookahead``

    @property
    def knobs(self) -> SchedulerKnobs:
        return self.dsi.knobs

    @property
    def latency(self) -> float:
        return {"dsi": self.dsi.latency, "si": self.si_latency, "target-only": 1.0}[self.scheduler]

    @property
    def dsi_vs_si(self) -> float:
        return self.si_latency / self.dsi.latency

    @property
    def dsi_vs_nonsi(self) -> float:
        return 1.0 / self.dsi.latency


def best_si(drafter_cost: float, acceptance: float, max_lookahead: int = MAX_LOOKAHEAD) -> tuple[int, float]:
    """SI's fastest lookahead and its time per token (exact)."""
    check_inputs(drafter_cost, min(acceptance, 0.999999), max_lookahead)
    a = min(acceptance, 0.999999)  # a measured rate of 1 means "very high", not "never rejects"
    return min(
        ((k, si_latency(drafter_cost, a, k)) for k in range(1, max_lookahead + 1)), key=lambda kl: kl[1]
    )


def candidate_knobs(
    drafter_cost: float, servers: int, block_sizes: Sequence[int] | None = None, max_block: int = 8
) -> list[SchedulerKnobs]:
    """Depths 1, SP and SP+1 (one block drafted ahead of the servers), with and without plain steps, for
    ``block_sizes`` (default 1 .. max_block, none drafting longer than 1.5 target forwards)."""
    if servers < 1:
        raise InvalidArgumentError("servers", f"must be >= 1, got {servers}")
    if block_sizes is None:
        block_sizes = range(1, max(1, min(max_block, math.ceil(1.5 / drafter_cost))) + 1)
    depths = sorted({1, servers, servers + 1})
    return [
        SchedulerKnobs(block_size, depth, plain)
        for block_size in block_sizes
        for depth in depths
        for plain in (False, True)
    ]


def best_knobs(
    setting: EventSetting, candidates: list[SchedulerKnobs], seed: int = 0, budget: SearchBudget | None = None
) -> EventResult:
    """The candidate with the lowest time per token: screened briefly, the best few measured longer, the
    winner's estimate from a fresh run."""
    if not candidates:
        raise InvalidArgumentError("candidates", "must not be empty")
    budget = budget or SearchBudget()
    screened = sorted(
        (simulate_events(setting, knobs, budget.screen_tokens, runs=1, seed=seed) for knobs in candidates),
        key=lambda result: result.latency,
    )
    refined = [
        simulate_events(setting, result.knobs, budget.refine_tokens, runs=1, seed=seed + 1)
        for result in screened[: budget.refined]
    ]
    winner = min(refined, key=lambda result: result.latency).knobs
    return simulate_events(setting, winner, budget.final_tokens, runs=1, seed=seed + 2)


def choose_schedule(
    drafter_cost: float,
    acceptance: float,
    servers: int,
    *,
    margin: float = 0.03,
    seed: int = 0,
    preempted_frees_server: bool = False,
    budget: SearchBudget | None = None,
) -> ScheduleChoice:
    """DSI's best knobs for (c, a, SP), and whether DSI, SI or target-only decoding is the one to run."""
    setting = EventSetting(drafter_cost, acceptance, servers, preempted_frees_server)
    si_lookahead, si_time = best_si(drafter_cost, acceptance)
    dsi = best_knobs(setting, candidate_knobs(drafter_cost, servers), seed, budget)
    scheduler: Scheduler = "si" if si_time < 1.0 else "target-only"
    if dsi.latency < min(si_time, 1.0) * (1.0 - margin):
        scheduler = "dsi"
    return ScheduleChoice(scheduler=scheduler, dsi=dsi, si_lookahead=si_lookahead, si_latency=si_time)
