"""``polyspec bench load``'s results: per-run summaries, the JSON document and the markdown table.

A run's outcomes are the requests that ended inside its window: ok (with their output tokens and
latency), refused (RESOURCE_EXHAUSTED: the coordinator's admission refusal) or failed (any other
status, counted by code). Goodput counts ok requests only, over the window. The greedy canary checks one
prompt against the output it gave before any run; a canary that could not run (refused, failed) is
counted apart from one that ran and differed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

FORMAT = "polyspec-bench-load/1"
MiB = 1 << 20

OutcomeKind = Literal["ok", "refused", "failed"]


@dataclass(frozen=True)
class Outcome:
    """One load request: how it ended, its latency in seconds, its output tokens, its status code."""

    kind: OutcomeKind
    seconds: float
    tokens: int = 0
    code: str = "OK"


@dataclass
class CanaryTally:
    """Greedy canary checks of one run: identical to the reference, different, or not run to the end."""

    identical: int = 0
    different: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {"identical": self.identical, "different": self.different, "errors": dict(self.errors)}


@dataclass(frozen=True)
class RunRecord:
    """Everything measured in one run."""

    name: str
    clients: int
    seconds: float
    fault: str
    outcomes: Sequence[Outcome]
    unfinished: int
    canary: CanaryTally
    peak_rss_bytes: dict[str, int]


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The nearest-rank percentile of ``values`` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def summarize(run: RunRecord) -> dict[str, Any]:
    """The JSON summary of one run."""
    ok = [o for o in run.outcomes if o.kind == "ok"]
    latencies = [o.seconds for o in ok]
    ok_tokens = sum(o.tokens for o in ok)
    failures = Counter(o.code for o in run.outcomes if o.kind == "failed")
    return {
        "name": run.name,
        "clients": run.clients,
        "seconds": round(run.seconds, 3),
        "fault": run.fault,
        "ok": len(ok),
        "refused": sum(o.kind == "refused" for o in run.outcomes),
        "failed": sum(failures.values()),
        "failures": dict(failures),
        "unfinished": run.unfinished,
        "ok_tokens": ok_tokens,
        "goodput_tokens_per_second": ok_tokens / run.seconds if run.seconds > 0 else 0.0,
        "goodput_requests_per_second": len(ok) / run.seconds if run.seconds > 0 else 0.0,
        "latency_seconds": {
            name: percentile(latencies, fraction)
            for name, fraction in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))
        },
        "canary": run.canary.as_dict(),
        "peak_rss_mib": {name: round(size / MiB, 1) for name, size in run.peak_rss_bytes.items()},
    }


def build_document(
    settings: dict[str, Any], machine: dict[str, Any], runs: Sequence[RunRecord]
) -> dict[str, Any]:
    """The JSON results: settings, machine, each run's summary, and the goodput ratio overload/capacity."""
    summaries = [summarize(run) for run in runs]
    by_name = {summary["name"]: summary for summary in summaries}
    ratio = None
    if "capacity" in by_name and "overload" in by_name and by_name["capacity"]["goodput_tokens_per_second"]:
        ratio = (
            by_name["overload"]["goodput_tokens_per_second"]
            / by_name["capacity"]["goodput_tokens_per_second"]
        )
    return {
        "format": FORMAT,
        "settings": settings,
        "machine": machine,
        "runs": summaries,
        "overload_goodput_ratio": ratio,
    }


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _canary(canary: dict[str, Any]) -> str:
    text = f"{canary['identical']}/{canary['identical'] + canary['different']}"
    errors = sum(canary["errors"].values())
    return text + (f" ({errors} not run)" if errors else "")


def format_table(document: dict[str, Any]) -> str:
    """The runs as a markdown table (peak RSS per service in MiB; latency of ok requests in seconds)."""
    runs = document["runs"]
    services = list(runs[0]["peak_rss_mib"]) if runs else []
    header = ["run", "clients", "ok", "refused", "failed", "ok tok/s", "ok req/s", "p50 s", "p90 s", "p99 s"]
    header += ["canary identical", *(f"{name} MiB" for name in services)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in runs:
        latency = run["latency_seconds"]
        failed = str(run["failed"])
        if run["failures"]:
            failed += " (" + ", ".join(f"{code} {n}" for code, n in sorted(run["failures"].items())) + ")"
        cells = [
            run["name"],
            str(run["clients"]),
            str(run["ok"]),
            str(run["refused"]),
            failed,
            f"{run['goodput_tokens_per_second']:.1f}",
            f"{run['goodput_requests_per_second']:.2f}",
            _seconds(latency["p50"]),
            _seconds(latency["p90"]),
            _seconds(latency["p99"]),
            _canary(run["canary"]),
            *(f"{run['peak_rss_mib'].get(name, 0.0):.0f}" for name in services),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    ratio = document.get("overload_goodput_ratio")
    if ratio is not None:
        lines.append("")
        lines.append(f"goodput at overload / at capacity: {ratio:.2f}")
    return "\n".join(lines)
