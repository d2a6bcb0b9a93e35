"""The exact law of a toy LM's first two sampled tokens, and a goodness-of-fit test against it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from typing import Protocol, TypeVar

import torch
from scipy import stats as scipy_stats

from core.sampling import SamplingConfig

Cell = TypeVar("Cell", bound=Hashable)
MIN_EXPECTED_COUNT = 5.0


class ToyLM(Protocol):
    """A toy LM's next-token distribution after a context, with the sampling warpers applied."""

    def probs(self, context: Sequence[int], config: SamplingConfig) -> torch.Tensor: ...  # [vocab]


def exact_two_token_law(lm: ToyLM, prompt: list[int], config: SamplingConfig) -> dict[tuple[int, int], float]:
    """P(first two tokens = (a, b)) for every pair with positive probability."""
    law: dict[tuple[int, int], float] = {}
    first = lm.probs(prompt, config)
    for a in torch.nonzero(first).flatten().tolist():
        second = lm.probs([*prompt, a], config)
        for b in torch.nonzero(second).flatten().tolist():
            law[(a, b)] = float(first[a] * second[b])
    return law


def pooled_chi_square(law: Mapping[Cell, float], counts: Counter[Cell]) -> tuple[float, float]:
    """Pearson's chi-square (statistic, p-value) of ``counts`` against ``law``; cells expected fewer
    than five times (too rare for the chi-square approximation) are pooled into one."""
    samples = sum(counts.values())
    common = [cell for cell in law if law[cell] * samples >= MIN_EXPECTED_COUNT]
    rare = [cell for cell in law if law[cell] * samples < MIN_EXPECTED_COUNT]
    observed = [counts[cell] for cell in common]
    expected = [law[cell] * samples for cell in common]
    if rare:
        observed.append(sum(counts[cell] for cell in rare))
        expected.append(sum(law[cell] for cell in rare) * samples)
    chi2, p_value = scipy_stats.chisquare(observed, expected)
    return float(chi2), float(p_value)
