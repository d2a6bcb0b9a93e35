"""Which scheduler a request runs and DSI's knobs, from the measured costs (``coordinator.dsimodel``).

``DsiPolicy.choose`` resolves ``params.scheduler or settings.default_scheduler``: ``si`` runs the SI loop;
``dsi`` runs DSI with the knobs the event model finds fastest for the measured drafter/target cost ratio
and acceptance (defaults before anything was measured), except over a single usable target replica,
where it runs SI: with one replica DSI can only overlap the next draft with the running verification,
which the event model prices as a tie with SI and which measured 0.96x SI (SmolLM2-135M drafting for
Qwen2.5-Coder-0.5B, padded services: SI's per-round lookahead beats DSI's fixed blocks), so running
SI there keeps "never slower than SI" (the statistics say ``scheduler=si``); ``auto`` runs DSI only where
``choose_schedule`` says it beats SI and target-only decoding: more than one usable target replica, a
drafting plan, measured costs, and no other request running (DSI spends several times SI's target
compute per token, which a loaded service pays for in other requests' latency). The choice depends on
measurements and the deployment only, never on a request's draws. Choices are cached on rounded inputs
(the knob search takes a good part of a second).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from coordinator.dsimodel import SchedulerKnobs, choose_schedule
from coordinator.lookahead import CostEstimates
from coordinator.request import SchedulerName

MIN_DRAFTER_COST = 0.01  # the model's grid starts there


@dataclass(frozen=True)
class MeasuredCosts:
    """The drafter/target cost ratio (per token) and the per-token acceptance of one regime."""

    drafter_cost: float
    acceptance: float


@dataclass(frozen=True)
class SchedulerChoice:
    scheduler: SchedulerName  # SI or DSI
    knobs: SchedulerKnobs | None  # DSI's
    reason: str


def default_knobs(replicas: int) -> SchedulerKnobs:
    """DSI's knobs before costs are measured: blocks of 4, one block drafted ahead of the replicas, no
    plain steps (they pay only where the drafter is slow against the target: the model decides that)."""
    return SchedulerKnobs(block_size=4, depth=max(1, replicas) + 1, plain_steps=False)


def measured_costs(estimates: CostEstimates, regime: str) -> MeasuredCosts | None:
    """The costs the model needs, from what earlier rounds measured (None: not yet measured)."""
    draft, target = estimates.draft_step_seconds, estimates.verify_seconds(1)
    acceptance = estimates.acceptance(regime)
    if draft is None or target is None or target <= 0 or acceptance is None:
        return None
    per_token = 0.5 * (acceptance.first + acceptance.later)
    return MeasuredCosts(max(MIN_DRAFTER_COST, draft / target), min(0.99, max(0.01, per_token)))


@dataclass
class DsiPolicy:
    """The per-deployment scheduler choice (its cache is shared by requests; thread-safe)."""

    _cache: dict[tuple[float, float, int], tuple[str, SchedulerKnobs]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def model_choice(self, costs: MeasuredCosts, replicas: int) -> tuple[str, SchedulerKnobs]:
        """``choose_schedule``'s answer for rounded (c, a, replicas): "dsi", "si" or "target-only"."""
        key = (round(costs.drafter_cost, 2), round(costs.acceptance * 20) / 20, replicas)
        with self._lock:
            cached = self._cache.get(key)
        if cached is None:
            choice = choose_schedule(max(MIN_DRAFTER_COST, key[0]), min(0.99, max(0.01, key[1])), replicas)
            cached = (choice.scheduler, choice.knobs)
            with self._lock:
                self._cache[key] = cached
        return cached

    def choose(
        self,
        asked: SchedulerName,
        *,
        replicas: int,
        drafting: bool,
        costs: MeasuredCosts | None,
        other_requests: int,
    ) -> SchedulerChoice:
        """The scheduler a request runs (never AUTO) and, for DSI, its knobs."""
        if asked is SchedulerName.SI:
            return SchedulerChoice(SchedulerName.SI, None, "asked for")
        if not drafting:
            return SchedulerChoice(SchedulerName.SI, None, "the request does not draft")
        if replicas < 2:
            return SchedulerChoice(SchedulerName.SI, None, "one target replica (DSI over one runs SI)")
        if asked is SchedulerName.DSI:
            knobs = default_knobs(replicas)
            if costs is not None:
                knobs = self.model_choice(costs, replicas)[1]
            return SchedulerChoice(SchedulerName.DSI, knobs, "asked for")
        if other_requests > 0:
            return SchedulerChoice(SchedulerName.SI, None, "other requests are running")
        if costs is None:
            return SchedulerChoice(SchedulerName.SI, None, "costs not measured yet")
        scheduler, knobs = self.model_choice(costs, replicas)
        if scheduler != "dsi":
            return SchedulerChoice(SchedulerName.SI, None, f"the model prefers {scheduler}")
        return SchedulerChoice(SchedulerName.DSI, knobs, "the model says DSI pays")
