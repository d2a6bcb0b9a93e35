"""Exact output laws of toy LMs, plain reference math, and the goodness-of-fit checks of the law tests.

The reference warper and truncation here are written independently of ``core.sampling`` (Python floats,
loops), so the tests compare the product with something other than itself. ``exact_law`` enumerates a toy
LM's law over its outputs; ``assert_law`` checks samples against a law by a chi-square test (rare cells
pooled) and a bound on the total-variation distance.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable, Mapping, Sequence
from typing import TypeVar

import numpy as np
from scipy import stats

from core.sampling import SamplingConfig
from tests.support.toy_lm import ToyLM

Outcome = TypeVar("Outcome", bound=Hashable)
MIN_EXPECTED_COUNT = 5.0


def reference_warp(logits: Sequence[float], config: SamplingConfig) -> np.ndarray:
    """Warped distribution of one logit row, written plainly in float64."""
    values = [float(x) for x in logits]
    vocab = len(values)
    if config.is_greedy:
        best = max(range(vocab), key=lambda i: (values[i], -i))
        return np.asarray(np.eye(vocab)[best], dtype=np.float64)
    scaled = [x / config.temperature for x in values]
    keep = [math.isfinite(x) for x in scaled]
    if 0 < config.top_k < vocab:
        kth = sorted(scaled, reverse=True)[config.top_k - 1]
        keep = [kept and x >= kth for kept, x in zip(keep, scaled, strict=True)]
    probs = _normalised_exp(scaled, keep)
    if config.top_p < 1:
        mass, last_kept = 0.0, 0.0
        for prob in sorted(probs, reverse=True):
            if mass >= config.top_p:
                break
            mass, last_kept = mass + prob, prob
        keep = [kept and p >= last_kept and p > 0 for kept, p in zip(keep, probs, strict=True)]
        probs = _normalised_exp(scaled, keep)
    return np.array(probs)


def _normalised_exp(scaled: Sequence[float], keep: Sequence[bool]) -> list[float]:
    top = max(x for x, kept in zip(scaled, keep, strict=True) if kept)
    weights = [math.exp(x - top) if kept else 0.0 for x, kept in zip(scaled, keep, strict=True)]
    total = sum(weights)
    return [w / total for w in weights]


def reference_proposal(logits: Sequence[float], config: SamplingConfig, max_support: int) -> np.ndarray:
    """The drafter's exact proposal: warp, keep the max_support most likely, renormalise."""
    probs = reference_warp(logits, config)
    if config.is_greedy:
        return probs
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    kept = np.zeros_like(probs)
    for i in order[:max_support]:
        kept[i] = probs[i]
    return np.asarray(kept / kept.sum(), dtype=np.float64)


def next_token_law(lm: ToyLM, context: Sequence[int], config: SamplingConfig) -> dict[int, float]:
    """The warped next-token law after ``context`` (positive entries, by id)."""
    support = lm.support
    row = lm.logits(context)
    probs = reference_warp([float(row[i]) for i in support], config)
    return {token: float(p) for token, p in zip(support, probs, strict=True) if p > 0}


def exact_law(
    lm: ToyLM,
    config: SamplingConfig,
    length: int,
    *,
    prompt: Sequence[int] = (),
    eos: Collection[int] = (),
) -> dict[tuple[int, ...], float]:
    """The law of the first ``length`` tokens after ``prompt``; an EOS id ends a sequence early."""
    law: dict[tuple[int, ...], float] = {}

    def walk(output: tuple[int, ...], mass: float) -> None:
        if len(output) == length or (output and output[-1] in eos):
            law[output] = law.get(output, 0.0) + mass
            return
        for token, prob in next_token_law(lm, [*prompt, *output], config).items():
            walk((*output, token), mass * prob)

    walk((), 1.0)
    return law


def greedy_output(
    lm: ToyLM, length: int, *, prompt: Sequence[int] = (), eos: Collection[int] = ()
) -> tuple[int, ...]:
    """The argmax decoding of ``lm`` (the first maximum, as ``torch.argmax``)."""
    (output,) = exact_law(lm, SamplingConfig(0.0), length, prompt=prompt, eos=eos)
    return output


def chi_square_pvalue(observed: np.ndarray, expected_probs: np.ndarray) -> float:
    """Pearson chi-square p-value; cells expected fewer than five times are pooled into one."""
    total = observed.sum()
    expected = expected_probs * total
    assert observed[expected_probs == 0].sum() == 0, "a zero-probability outcome was observed"
    small = expected < MIN_EXPECTED_COUNT
    observed_cells = np.append(observed[~small], observed[small].sum())
    expected_cells = np.append(expected[~small], expected[small].sum())
    if expected_cells[-1] == 0:
        observed_cells, expected_cells = observed_cells[:-1], expected_cells[:-1]
    if len(expected_cells) < 2:
        return 1.0
    expected_cells = expected_cells * observed_cells.sum() / expected_cells.sum()
    return float(stats.chisquare(observed_cells, expected_cells).pvalue)


def tv_distance(observed: np.ndarray, expected_probs: np.ndarray) -> float:
    return 0.5 * float(np.abs(observed / observed.sum() - expected_probs).sum())


def tv_bound(expected_probs: np.ndarray, num_samples: int, delta: float = 1e-6) -> float:
    """A bound the empirical TV distance exceeds with probability <= delta (mean bound + McDiarmid)."""
    mean_bound = 0.5 * float(np.sqrt(expected_probs * (1 - expected_probs) / num_samples).sum())
    return mean_bound + math.sqrt(math.log(1 / delta) / (2 * num_samples))


def assert_law(samples: Sequence[Outcome], law: Mapping[Outcome, float], *, alpha: float = 1e-4) -> None:
    """Asserts ``samples`` follow ``law``: outcomes of the law only, chi-square p >= alpha, TV in bound."""
    outcomes = list(law)
    index = {outcome: i for i, outcome in enumerate(outcomes)}
    unknown = [s for s in set(samples) if s not in index]
    assert not unknown, f"outcomes outside the law's support were observed: {unknown[:5]}"
    codes = np.fromiter((index[s] for s in samples), dtype=np.int64, count=len(samples))
    observed = np.bincount(codes, minlength=len(outcomes)).astype(np.float64)
    probs = np.array([law[o] for o in outcomes], dtype=np.float64)
    assert abs(probs.sum() - 1.0) < 1e-9, f"the law sums to {probs.sum()}"
    pvalue = chi_square_pvalue(observed, probs)
    distance, bound = tv_distance(observed, probs), tv_bound(probs, len(samples))
    assert pvalue >= alpha, f"chi-square p-value {pvalue:.2e} < {alpha} (TV {distance:.4f})"
    assert distance <= bound, f"TV distance {distance:.4f} above its confidence bound {bound:.4f}"


def assert_rate(successes: int, trials: int, oracle: float, *, sigmas: float = 5.0) -> None:
    """A binomial rate within ``sigmas`` standard deviations of its oracle."""
    sigma = math.sqrt(max(oracle * (1 - oracle), 1e-12) / trials)
    rate = successes / trials
    assert abs(rate - oracle) <= sigmas * sigma + 1e-9, (
        f"rate {rate:.4f} vs oracle {oracle:.4f} (sigma {sigma:.4f})"
    )
