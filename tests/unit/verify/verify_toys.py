"""Toy language models, plain reference math and statistics for the verification tests.

A toy LM is an explicit next-token logit table indexed by (position, token two back, previous token), so
the target's exact joint law over the first few output tokens can be enumerated. The reference warper and
truncation here are written independently of ``coordinator.verify`` (numpy, loops) so the tests compare
the fast path with something other than itself.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats
from torch import Tensor

from core.sampling import SamplingConfig

NUM_OUTPUT_TOKENS = 3

# The drafter's exact proposal in target ids after a context of target tokens; None: no draft token there.
ProposalFn = Callable[[Sequence[int]], "np.ndarray | None"]


@dataclass(frozen=True)
class ToyLM:
    """Next-token logits from ``table[position, token_two_back, previous_token]`` (BOS = context_vocab)."""

    table: Tensor  # [positions, context_vocab + 1, context_vocab + 1, vocab] float32

    @property
    def context_vocab(self) -> int:
        return int(self.table.shape[1]) - 1

    @property
    def vocab(self) -> int:
        return int(self.table.shape[-1])

    def next_logits(
        self,
        tokens: Tensor,  # [b, length] int64, context tokens (entries at or after positions are ignored)
        positions: Tensor,  # [b] int64, the position of the next token (= context length)
    ) -> Tensor:  # [b, vocab]
        rows = torch.arange(tokens.shape[0])
        bos = torch.full_like(positions, self.context_vocab)
        previous = torch.where(positions >= 1, tokens[rows, (positions - 1).clamp(min=0)], bos)
        two_back = torch.where(positions >= 2, tokens[rows, (positions - 2).clamp(min=0)], bos)
        return self.table[positions, two_back, previous]

    def logits_after(self, context: Sequence[int]) -> Tensor:  # [vocab]
        bos = self.context_vocab
        previous = context[-1] if len(context) >= 1 else bos
        two_back = context[-2] if len(context) >= 2 else bos
        return self.table[len(context), two_back, previous]


def random_toy_lm(seed: int, positions: int, context_vocab: int, vocab: int, scale: float = 1.5) -> ToyLM:
    generator = torch.Generator().manual_seed(seed)
    shape = (positions, context_vocab + 1, context_vocab + 1, vocab)
    return ToyLM(scale * torch.randn(shape, generator=generator, dtype=torch.float32))


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


def exact_output_law(
    target: ToyLM, config: SamplingConfig, num_tokens: int = NUM_OUTPUT_TOKENS
) -> np.ndarray:
    """The target's joint law over its first num_tokens tokens, flattened (first token most significant)."""
    vocab = target.vocab
    law = np.zeros(vocab**num_tokens)
    for index, sequence in enumerate(itertools.product(range(vocab), repeat=num_tokens)):
        prob = 1.0
        for position, token in enumerate(sequence):
            prob *= reference_warp(target.logits_after(sequence[:position]).tolist(), config)[token]
            if prob == 0:
                break
        law[index] = prob
    return law


def first_round_accept_law(
    target: ToyLM,
    drafter_proposal: ProposalFn,
    target_config: SamplingConfig,
    k: int,
) -> np.ndarray:
    """Exact law of the number of candidates accepted in the first round (speculative mode), [k+1].

    P(at least j accepted) = sum over draft prefixes x_1..x_j of prod_i min(target_probs_i, draft_probs_i)
    at x_i (the acceptance oracle, per position).
    """
    at_least = np.zeros(k + 2)
    at_least[0] = 1.0
    frontier: list[tuple[tuple[int, ...], float]] = [((), 1.0)]
    for j in range(1, k + 1):
        next_frontier = []
        for prefix, weight in frontier:
            target_probs = reference_warp(target.logits_after(prefix).tolist(), target_config)
            draft_probs = drafter_proposal(prefix)
            if draft_probs is None:
                continue
            for token, overlap in enumerate(np.minimum(target_probs, draft_probs)):
                if overlap > 0:
                    next_frontier.append(((*prefix, token), weight * overlap))
        frontier = next_frontier
        at_least[j] = sum(weight for _, weight in frontier)
    return at_least[:-1] - at_least[1:]


class DrafterProposal:
    """Same-vocabulary drafter proposal (a ``ProposalFn``), computed with the plain reference warper."""

    def __init__(self, drafter: ToyLM, config: SamplingConfig, max_support: int) -> None:
        self.drafter, self.config, self.max_support = drafter, config, max_support

    def __call__(self, context: Sequence[int]) -> np.ndarray | None:
        return reference_proposal(self.drafter.logits_after(context).tolist(), self.config, self.max_support)


def encode_sequences(tokens: Tensor, vocab: int) -> np.ndarray:  # [N, num_tokens] -> [N]
    weights = vocab ** np.arange(tokens.shape[1] - 1, -1, -1)
    return np.asarray((tokens.numpy().astype(np.int64) * weights).sum(axis=1), dtype=np.int64)


def chi_square_pvalue(observed: np.ndarray, expected_probs: np.ndarray, min_expected: float = 5.0) -> float:
    """Pearson chi-square p-value; cells with expected count below min_expected are pooled."""
    total = observed.sum()
    expected = expected_probs * total
    assert observed[expected_probs == 0].sum() == 0, "a zero-probability outcome was observed"
    small = expected < min_expected
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


def assert_law(samples: np.ndarray, law: np.ndarray, *, alpha: float = 1e-4) -> None:
    """Asserts outcome codes ``samples`` [N] follow ``law``: chi-square p >= alpha and TV within bound."""
    observed = np.bincount(samples, minlength=len(law)).astype(np.float64)
    assert len(observed) == len(law), "an outcome outside the law's support was observed"
    pvalue = chi_square_pvalue(observed, law)
    distance, bound = tv_distance(observed, law), tv_bound(law, len(samples))
    assert pvalue >= alpha, f"chi-square p-value {pvalue:.2e} < {alpha} (TV {distance:.4f})"
    assert distance <= bound, f"TV distance {distance:.4f} above its confidence bound {bound:.4f}"
