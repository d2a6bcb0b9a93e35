"""The heatmaps of ``polyspec simulate`` as plain data: one matrix per quantity, rows = acceptance rates,
columns = drafter costs (target forward = 1)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from coordinator.dsimodel import (
    EventSetting,
    SearchBudget,
    best_offline_point,
    best_si,
    choose_schedule,
    offline_point,
)
from coordinator.dsimodel.events import SchedulerKnobs
from coordinator.dsimodel.offline import si_latency
from coordinator.dsimodel.policy import best_knobs, candidate_knobs

Matrix = list[list[float | None]]
Cell = tuple[float, float]  # (c, a)

# The published settings, recomputed with the paper's logic (ALGORITHMS.md §5, issue 12): (c, a, k) and
# the speedups they report.
PUBLISHED = (
    {"c": 0.5, "a": 0.3, "k": 2, "si_vs_nonsi": 0.695, "dsi_vs_nonsi": 1.021},
    {"c": 0.1, "a": 0.9, "k": 5, "dsi_vs_si": 1.46},
)


QUICK_BUDGET = SearchBudget(screen_tokens=300, refined=3, refine_tokens=1500, final_tokens=5000)


@dataclass(frozen=True)
class GridSpec:
    drafter_costs: tuple[float, ...]
    acceptances: tuple[float, ...]
    servers: int
    lookahead: int | None  # None: each algorithm at its best lookahead
    models: tuple[str, ...]  # "paper", "event"
    seed: int = 0
    # Lighter than the policy's default: a heatmap cell may be a few percent off, a grid runs in seconds.
    budget: SearchBudget = field(default_factory=lambda: QUICK_BUDGET)


def _matrix(spec: GridSpec, cell: Callable[[float, float], float | None]) -> Matrix:
    return [[cell(c, a) for c in spec.drafter_costs] for a in spec.acceptances]


def paper_heatmaps(spec: GridSpec) -> dict[str, Any]:
    """The paper's model: SI and DSI speedups; DSI only where ``servers`` suffice (else None)."""
    points = {(c, a): _paper_cell(spec, c, a) for c in spec.drafter_costs for a in spec.acceptances}
    si_time: dict[Cell, float | None] = {key: pair[0] for key, pair in points.items()}
    dsi_time = {key: pair[1] for key, pair in points.items()}

    def ratio(
        numerator: dict[tuple[float, float], float | None], denominator: dict[Any, float | None]
    ) -> Matrix:
        def cell(c: float, a: float) -> float | None:
            top, bottom = numerator[c, a], denominator[c, a]
            return None if top is None or bottom is None else top / bottom

        return _matrix(spec, cell)

    ones: dict[Cell, float | None] = dict.fromkeys(points, 1.0)
    return {
        "si_vs_nonsi": ratio(ones, si_time),
        "dsi_vs_nonsi": ratio(ones, dsi_time),
        "dsi_vs_si": ratio(si_time, dsi_time),
        "si_lookahead": _matrix(spec, lambda c, a: points[c, a][2]),
        "dsi_lookahead": _matrix(spec, lambda c, a: points[c, a][3]),
    }


def _paper_cell(spec: GridSpec, c: float, a: float) -> tuple[float, float | None, float, float | None]:
    """(SI time, DSI time or None, SI's k, DSI's k or None) per output token."""
    if spec.lookahead is not None:
        point = offline_point(c, a, spec.lookahead)
        feasible = point.servers_required <= spec.servers
        k = float(spec.lookahead)
        return point.si_latency, point.dsi_latency if feasible else None, k, k if feasible else None
    best = best_offline_point(c, a, spec.servers)
    if best is None:
        si_k, si_time = best_si(c, a)
        return si_time, None, float(si_k), None
    si, dsi = best
    return si.si_latency, dsi.dsi_latency, float(si.lookahead), float(dsi.lookahead)


def event_heatmaps(spec: GridSpec) -> dict[str, Any]:
    """The event model with the policy's knobs (block size fixed to the lookahead when one is given)."""
    cells = {(c, a): _event_cell(spec, c, a) for c in spec.drafter_costs for a in spec.acceptances}
    return {
        "dsi_vs_nonsi": _matrix(spec, lambda c, a: cells[c, a]["dsi_vs_nonsi"]),
        "dsi_vs_si": _matrix(spec, lambda c, a: cells[c, a]["dsi_vs_si"]),
        "target_forwards_per_token": _matrix(spec, lambda c, a: cells[c, a]["forwards"]),
        "knobs": [[cells[c, a]["knobs"] for c in spec.drafter_costs] for a in spec.acceptances],
        "scheduler": [[cells[c, a]["scheduler"] for c in spec.drafter_costs] for a in spec.acceptances],
    }


def _event_cell(spec: GridSpec, c: float, a: float) -> dict[str, Any]:
    if spec.lookahead is None:
        choice = choose_schedule(c, a, spec.servers, seed=spec.seed, budget=spec.budget)
        result, si_time, scheduler = choice.dsi, choice.si_latency, choice.scheduler
    else:
        setting = EventSetting(c, a, spec.servers)
        candidates = candidate_knobs(c, spec.servers, block_sizes=(spec.lookahead,))
        result = best_knobs(setting, candidates, spec.seed, spec.budget)
        si_time = si_latency(c, a, spec.lookahead)
        scheduler = (
            "dsi" if result.latency < min(si_time, 1.0) else ("si" if si_time < 1.0 else "target-only")
        )
    return {
        "dsi_vs_nonsi": 1.0 / result.latency,
        "dsi_vs_si": si_time / result.latency,
        "forwards": result.target_forwards_per_token,
        "knobs": _knobs_json(result.knobs),
        "scheduler": scheduler,
    }


def _knobs_json(knobs: SchedulerKnobs) -> dict[str, Any]:
    return {"block_size": knobs.block_size, "depth": knobs.depth, "plain_steps": knobs.plain_steps}


def published_checks() -> list[dict[str, float]]:
    """The published settings and what the paper's model here gives for them."""
    rows = []
    for published in PUBLISHED:
        point = offline_point(published["c"], published["a"], int(published["k"]))
        ours = {
            "si_vs_nonsi": point.si_vs_nonsi,
            "dsi_vs_nonsi": point.dsi_vs_nonsi,
            "dsi_vs_si": point.dsi_vs_si,
        }
        rows.append({**published, **{f"model_{name}": value for name, value in ours.items()}})
    return rows


def compute(spec: GridSpec) -> dict[str, Any]:
    """Everything ``polyspec simulate`` writes as JSON."""
    result: dict[str, Any] = {
        "units": "target forward = 1, drafter forward = c; speedups are speed ratios (above 1: faster)",
        "servers": spec.servers,
        "lookahead": "best" if spec.lookahead is None else spec.lookahead,
        "drafter_costs": list(spec.drafter_costs),
        "acceptances": list(spec.acceptances),
        "seed": spec.seed,
        "published_checks": published_checks(),
    }
    if "paper" in spec.models:
        result["paper"] = paper_heatmaps(spec)
    if "event" in spec.models:
        result["event"] = event_heatmaps(spec)
    return result


def summary_lines(result: dict[str, Any]) -> list[str]:
    """A few lines for the terminal: the published checks and each heatmap's range."""
    lines = []
    for check in result["published_checks"]:
        published = ", ".join(
            f"{name} {check[name]:.3f} (model {check['model_' + name]:.3f})"
            for name in ("si_vs_nonsi", "dsi_vs_nonsi", "dsi_vs_si")
            if name in check
        )
        lines.append(f"published c={check['c']} a={check['a']} k={int(check['k'])}: {published}")
    for model in ("paper", "event"):
        if model not in result:
            continue
        for name in ("dsi_vs_si", "dsi_vs_nonsi"):
            cells = [v for row in result[model][name] for v in row if v is not None]
            if cells:
                lines.append(
                    f"{model} {name}: {min(cells):.2f}x .. {max(cells):.2f}x over {len(cells)} cells"
                )
    return lines
