"""``polyspec disco replay``: what each stop rule runs at given costs, replayed exactly on traced paths.

A greedy collection traces the drafter along the target's output (``core.disco.replay``), on which any
stop rule replays exactly: its own rounds, at any step costs. This report replays, on the test prompts:

- every static draft length 1..k, and keeps the one fastest on the choice prompts (the baseline);
- the confidence stop (the drafted token's probability below a threshold) at its best threshold on the
  choice prompts;
- a trained classifier (an artifact of the pair), likewise;
- the oracle, which stops exactly on the first token the target rejects: the ceiling of any stop rule.

Each rule gets its tokens per second, draft length and acceptance, and a paired speedup over the best
static length with a 95% bootstrap interval over the test prompts (``tools.bench.compare``). The costs are
the collection's (a drafter step and the target's verification per draft width) or a deployment's, so
that whether a trained stop pays on other hardware can be read before deploying it. The rates are of the
rounds alone unless a request's cost outside them is given (``RequestCosts``: both models' prefill);
with it they are end-to-end, comparable with ``polyspec bench``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from core.disco.classifier import StopClassifier
from core.disco.features import FEATURE_NAMES
from core.disco.replay import (
    POSITION,
    ReplayPath,
    Scorer,
    oracle_scores,
    path_scores,
    replay_path,
)
from core.disco.training import THRESHOLDS, Outcome, Replay, StepCosts, classifier_scorer, outcome_replay
from tools.bench.compare import bootstrap_speedup

TOKEN_PROB = FEATURE_NAMES.index("token_prob")


@dataclass(frozen=True)
class RuleReplay:
    """One stop rule on the test prompts, at its threshold chosen on the choice prompts."""

    rule: str  # e.g. static:6, confidence<0.5, classifier<0.65, oracle
    rate: float  # output tokens per second, all test prompts pooled
    mean_drafted: float
    acceptance: float  # accepted / drafted draft tokens
    speedup: float  # paired over the best static length, geometric mean over the test prompts
    low: float
    high: float


@dataclass(frozen=True)
class RequestCosts:
    """The rounds' step costs and a request's cost outside its rounds (prefill of both models and
    start-up, the same whatever the stop rule): with it the rates are end-to-end, as ``polyspec bench``
    measures them, and every speedup is diluted by the share of the request no stop rule touches."""

    steps: StepCosts
    request_seconds: float = 0.0


@dataclass(frozen=True)
class WhatIf:
    best_static: int
    rules: tuple[RuleReplay, ...]


def _static_scorer(length: int) -> Scorer:
    def score(rows: Sequence[tuple[float, ...]]) -> list[float]:
        return [0.0 if row[POSITION] >= length - 1 else 1.0 for row in rows]

    return score


def _confidence(rows: Sequence[tuple[float, ...]]) -> list[float]:
    return [row[TOKEN_PROB] for row in rows]


class _Rule:
    """A scorer's path scores, computed once, replayed at any threshold on any prompts."""

    def __init__(self, paths: Sequence[ReplayPath], k: int, scorer: Scorer | None) -> None:
        self.k = k
        self.scored = {
            path.prompt_index: (
                path,
                oracle_scores(path, k) if scorer is None else path_scores(path, k, scorer),
            )
            for path in paths
        }

    def outcomes(self, prompt: int, threshold: float) -> list[Outcome]:
        path, scores = self.scored[prompt]
        return [(r.drafted, r.accepted, r.committed) for r in replay_path(path, scores, threshold, self.k)]

    def pooled(self, prompts: Sequence[int], threshold: float, costs: RequestCosts) -> Replay:
        outcomes = [o for p in prompts for o in self.outcomes(p, threshold)]
        return outcome_replay(outcomes, costs.steps, costs.request_seconds * len(prompts))

    def per_prompt(self, prompts: Sequence[int], threshold: float, costs: RequestCosts) -> list[float]:
        return [
            outcome_replay(self.outcomes(p, threshold), costs.steps, costs.request_seconds).rate
            for p in prompts
        ]

    def best_threshold(self, prompts: Sequence[int], costs: RequestCosts) -> float:
        return max(THRESHOLDS, key=lambda t: self.pooled(prompts, t, costs).rate)


def what_if(
    paths: Sequence[ReplayPath],
    k: int,
    costs: StepCosts,
    *,
    choose_on: range,
    test: range,
    classifier: StopClassifier | None = None,
    request_seconds: float = 0.0,
) -> WhatIf:
    """Replays the rules of the module docstring, each test prompt charged ``request_seconds`` beyond
    its rounds (``RequestCosts``); ``ValueError`` when a prompt range has no path."""
    choice = sorted(p.prompt_index for p in paths if p.prompt_index in choose_on)
    tested = sorted(p.prompt_index for p in paths if p.prompt_index in test)
    if not choice or not tested:
        raise ValueError(
            f"no traced path for the choice prompts {_span(choose_on)} or the test prompts {_span(test)} "
            f"({len(choice)} and {len(tested)}): collect them greedily with the same tokenizer"
        )
    kept = [p for p in paths if p.prompt_index in choose_on or p.prompt_index in test]
    charged = RequestCosts(costs, request_seconds)
    statics = {length: _Rule(kept, k, _static_scorer(length)) for length in range(1, k + 1)}
    best = max(statics, key=lambda length: statics[length].pooled(choice, 0.5, charged).rate)
    baseline = statics[best].per_prompt(tested, 0.5, charged)
    candidates: list[tuple[str, _Rule, float | None]] = [(f"static:{best}", statics[best], 0.5)]
    candidates.append(("confidence", _Rule(kept, k, _confidence), None))
    if classifier is not None:
        candidates.append(("classifier", _Rule(kept, k, classifier_scorer(classifier)), None))
    candidates.append(("oracle", _Rule(kept, k, None), 0.5))
    rules = []
    for name, rule, fixed in candidates:
        threshold = rule.best_threshold(choice, charged) if fixed is None else fixed
        label = name if fixed is not None else f"{name}<{threshold:g}"
        rules.append(_replay(label, rule, threshold, tested, costs=charged, baseline=baseline))
    return WhatIf(best, tuple(rules))


def _replay(
    label: str,
    rule: _Rule,
    threshold: float,
    tested: list[int],
    *,
    costs: RequestCosts,
    baseline: list[float],
) -> RuleReplay:
    pooled = rule.pooled(tested, threshold, costs)
    rates = rule.per_prompt(tested, threshold, costs)
    logs = [
        math.log(rate / base) for rate, base in zip(rates, baseline, strict=True) if rate > 0 and base > 0
    ]
    speedup, low, high = bootstrap_speedup(logs) if logs else (0.0, 0.0, 0.0)
    acceptance = pooled.mean_accepted / pooled.mean_drafted if pooled.mean_drafted else 0.0
    return RuleReplay(label, pooled.rate, pooled.mean_drafted, acceptance, speedup, low, high)


def deployment_costs(
    draft_ms: float, verify_ms: float, verify_ms_per_token: float, round_ms: float, k: int
) -> StepCosts:
    """Step costs of a deployment: a drafter step, and a verification of j draft tokens costing
    ``verify_ms + (j + 1) * verify_ms_per_token + round_ms`` (it feeds j + 1 tokens; the round's own
    overhead, wire and coordinator, is charged with it)."""
    table = tuple((verify_ms + (j + 1) * verify_ms_per_token + round_ms) / 1000 for j in range(1, k + 1))
    return StepCosts(draft_ms / 1000, table[0], table)


def with_round_overhead(costs: StepCosts, round_ms: float, k: int) -> StepCosts:
    """The collection's costs with ``round_ms`` added to every verification."""
    table = tuple(costs.verify(j) + round_ms / 1000 for j in range(1, k + 1))
    return StepCosts(costs.draft_seconds, costs.target_seconds + round_ms / 1000, table)


def render(result: WhatIf, costs: StepCosts, request_seconds: float = 0.0) -> str:
    """The report as a text table."""
    widths = ", ".join(f"{costs.verify(j) * 1000:.0f}" for j in range(1, len(costs.verify_seconds) + 1))
    per_request = ""
    if request_seconds:
        per_request = f"; a request's prefill and start-up {request_seconds * 1000:.0f} ms"
    lines = [
        f"costs: drafter step {costs.draft_seconds * 1000:.1f} ms; verification of 1.. draft tokens "
        f"(round included) {widths} ms{per_request}",
        f"{'rule':<18} {'tok/s':>7} {'draft/round':>11} {'acceptance':>10}  vs static:{result.best_static}",
    ]
    for rule in result.rules:
        lines.append(
            f"{rule.rule:<18} {rule.rate:7.2f} {rule.mean_drafted:11.2f} {rule.acceptance:10.0%}  "
            f"{rule.speedup:.3f}x [{rule.low:.3f}, {rule.high:.3f}]"
        )
    return "\n".join(lines)


def _span(prompts: range) -> str:
    return f"{prompts.start}-{prompts.stop - 1}"
