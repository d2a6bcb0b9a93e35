"""Paired speedups with confidence intervals: each services configuration against each transformers peer.

A paired speedup of A over B is the geometric mean, over the prompts both ran, of B's seconds per output
token divided by A's (``report.paired_speedup``). Its 95% interval is a percentile bootstrap over the
prompts (seeded, so a result file is reproducible): resample the per-prompt log ratios with replacement
and take the 2.5th and 97.5th percentiles of their mean. An interval above 1 says A is faster on these
prompts beyond prompt-to-prompt noise; it says nothing about other prompts or machines.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tools.bench.records import ConfigurationRun

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
LEVEL = 0.95


@dataclass(frozen=True)
class PairedComparison:
    """``configuration`` over ``peer``: the paired speedup and its bootstrap interval."""

    configuration: str
    peer: str
    prompts: int
    speedup: float
    low: float
    high: float


def per_prompt_log_ratios(run: ConfigurationRun, peer: ConfigurationRun) -> list[float]:
    """log(peer's seconds per token / run's), for every prompt both ran with output tokens."""
    base = {r.prompt_index: r for r in peer.records if r.output_tokens > 0 and r.seconds > 0}
    return [
        math.log(
            (base[r.prompt_index].seconds / base[r.prompt_index].output_tokens)
            / (r.seconds / r.output_tokens)
        )
        for r in run.records
        if r.prompt_index in base and r.output_tokens > 0 and r.seconds > 0
    ]


def compare(run: ConfigurationRun, peer: ConfigurationRun) -> PairedComparison | None:
    """The paired speedup of ``run`` over ``peer`` with its interval (None: no prompt in common)."""
    logs = per_prompt_log_ratios(run, peer)
    if not logs:
        return None
    speedup, low, high = bootstrap_speedup(logs)
    return PairedComparison(
        configuration=run.configuration.label,
        peer=peer.configuration.label,
        prompts=len(logs),
        speedup=speedup,
        low=low,
        high=high,
    )


def bootstrap_speedup(log_ratios: Sequence[float]) -> tuple[float, float, float]:
    """The geometric-mean speedup of per-prompt log ratios and its seeded 95% percentile-bootstrap
    interval (``log_ratios`` not empty)."""
    logs = np.asarray(log_ratios, dtype=np.float64)
    assert logs.size > 0, "bootstrap_speedup needs at least one prompt"
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    means = rng.choice(logs, size=(BOOTSTRAP_RESAMPLES, logs.size), replace=True).mean(axis=1)
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return math.exp(float(logs.mean())), math.exp(float(low)), math.exp(float(high))


def peer_comparisons(runs: Sequence[ConfigurationRun]) -> list[PairedComparison]:
    """Every services configuration against every transformers configuration at the same temperature,
    its own ``ar`` included (the user's alternatives in the same run)."""
    services = [r for r in runs if r.configuration.engine == "services" and r.records]
    peers = [r for r in runs if r.configuration.engine == "transformers" and r.records]
    comparisons = []
    for run in services:
        for peer in peers:
            if peer.configuration.temperature != run.configuration.temperature:
                continue
            result = compare(run, peer)
            if result is not None:
                comparisons.append(result)
    return comparisons


def format_comparisons(comparisons: Sequence[PairedComparison]) -> str:
    """One line per comparison: ``A over B: 1.23x [1.10, 1.37] (n prompts)``."""
    if not comparisons:
        return ""
    width = max(len(c.configuration) for c in comparisons)
    lines = ["paired speedups over transformers, 95% bootstrap intervals over prompts:"]
    for c in comparisons:
        lines.append(
            f"  {c.configuration.ljust(width)}  over {c.peer}: {c.speedup:.2f}x "
            f"[{c.low:.2f}, {c.high:.2f}] ({c.prompts} prompts)"
        )
    return "\n".join(lines)
