"""Acceptance oracles of the first position of the first round (ALGORITHMS.md §8.2), written plainly.

Each oracle uses the reference warper of ``tests.unit.verify.verify_toys`` and its own re-implementation of
the method's first proposal, not the code under test: TLI sums min(target_probs, restricted draft_probs)
over the intersection (``min(p, q / Z)``), SLRS sums min(target_probs, psi) with psi read off by a
brute-force longest target-token prefix, and SLEM sums target_probs(t) * P(first candidate = t) with the
first candidate taken from the target tokenizer's own encoding of the drafted text.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from coordinator.vocab.canonical import CanonicalVocab
from core.sampling import SamplingConfig
from tests.unit.crossvocab.crossvocab_methods import Pair
from tests.unit.verify.verify_toys import reference_proposal, reference_warp


def first_target_probs(pair: Pair, config: SamplingConfig) -> dict[int, float]:
    """The target's warped distribution at the empty context, by target id."""
    probs = reference_warp(pair.target.support_logits(b""), config)
    return {token: float(p) for token, p in zip(pair.target.support, probs, strict=True) if p > 0}


def _drafter_proposal(pair: Pair, text: bytes, config: SamplingConfig, max_support: int) -> dict[int, float]:
    probs = reference_proposal(pair.drafter.support_logits(text), config, max_support)
    return {token: float(p) for token, p in zip(pair.drafter.support, probs, strict=True) if p > 0}


def tli_first_acceptance(
    pair: Pair, target_config: SamplingConfig, draft_config: SamplingConfig, max_support: int
) -> float:
    """sum over the intersection of min(target_probs, draft_probs restricted to it and renormalised)."""
    mapping = pair.drafter_to_target.tolist()
    logits = [
        x if mapping[token] >= 0 else -math.inf
        for token, x in zip(pair.drafter.support, pair.drafter.support_logits(b""), strict=True)
    ]
    assert any(math.isfinite(x) for x in logits), "no intersection mass at the first position"
    restricted = reference_proposal(logits, draft_config, max_support)
    target = first_target_probs(pair, target_config)
    return sum(
        min(target.get(mapping[token], 0.0), float(q))
        for token, q in zip(pair.drafter.support, restricted, strict=True)
        if q > 0
    )


def tli_first_acceptance_q_over_z(
    pair: Pair, target_config: SamplingConfig, draft_config: SamplingConfig
) -> float:
    """The same oracle as sum min(p, q / Z) from the unrestricted proposal (temperature-only warpers)."""
    mapping = pair.drafter_to_target.tolist()
    q = reference_warp(pair.drafter.support_logits(b""), draft_config)
    in_intersection = np.array([mapping[token] >= 0 for token in pair.drafter.support])
    z = float(q[in_intersection].sum())
    target = first_target_probs(pair, target_config)
    return sum(
        min(target.get(mapping[token], 0.0), float(q[i]) / z)
        for i, token in enumerate(pair.drafter.support)
        if in_intersection[i]
    )


def longest_target_prefix(vocab: CanonicalVocab, data: bytes) -> int | None:
    """The longest target token whose bytes are a prefix of ``data`` (lowest id among equal bytes)."""
    best: tuple[int, int] | None = None
    for token, token_bytes in enumerate(vocab.token_bytes):
        if token_bytes and data.startswith(token_bytes) and (best is None or len(token_bytes) > best[0]):
            best = (len(token_bytes), token)
    return None if best is None else best[1]


def slrs_first_psi(pair: Pair, draft_config: SamplingConfig, max_support: int) -> dict[int, float]:
    """psi of the first proposal from the empty context: the law of LTP(bytes of the first draft token)."""
    psi: dict[int, float] = {}
    for token, q in _drafter_proposal(pair, b"", draft_config, max_support).items():
        data = pair.drafter_vocab.token_bytes[token]
        target_token = longest_target_prefix(pair.target_vocab, data) if data else None
        if target_token is not None:
            psi[target_token] = psi.get(target_token, 0.0) + q
    total = sum(psi.values())
    return {token: mass / total for token, mass in psi.items()}


def slrs_first_acceptance(
    pair: Pair, target_config: SamplingConfig, draft_config: SamplingConfig, max_support: int
) -> float:
    """sum over target tokens of min(target_probs, psi) at the first proposal."""
    target = first_target_probs(pair, target_config)
    psi = slrs_first_psi(pair, draft_config, max_support)
    return sum(min(target.get(token, 0.0), mass) for token, mass in psi.items())


def _draft_sequences(
    pair: Pair, draft_config: SamplingConfig, max_support: int, k: int
) -> Iterator[tuple[tuple[int, ...], float]]:
    """Every sequence of up to k draft tokens from the empty context with its probability."""
    frontier: list[tuple[tuple[int, ...], float]] = [((), 1.0)]
    for _ in range(k):
        grown = []
        for drafts, weight in frontier:
            if drafts and not pair.drafter_vocab.is_text_token(drafts[-1]):
                yield drafts, weight  # a special token stops drafting
                continue
            text = pair.drafter_vocab.bytes_of(drafts)
            for token, q in _drafter_proposal(pair, text, draft_config, max_support).items():
                grown.append(((*drafts, token), weight * q))
        frontier = grown
    yield from frontier


def valid_prefix(data: bytes) -> bytes:
    """The longest prefix of ``data`` that is valid UTF-8."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        return data[: error.start]
    return data


def slem_first_candidate_law(
    pair: Pair, draft_config: SamplingConfig, max_support: int, k: int
) -> dict[int | None, float]:
    """Law of the first SLEM candidate of the first round (None: no candidate), by enumeration."""
    law: dict[int | None, float] = {}
    for drafts, weight in _draft_sequences(pair, draft_config, max_support, k):
        text = valid_prefix(pair.drafter_vocab.bytes_of(drafts)).decode("utf-8")
        ids = pair.target_vocab.tokenizer.encode(text, add_special_tokens=False).ids if text else []
        first = int(ids[0]) if ids else None
        law[first] = law.get(first, 0.0) + weight
    return law


def slem_first_acceptance(
    pair: Pair, target_config: SamplingConfig, draft_config: SamplingConfig, max_support: int, k: int
) -> float:
    """sum over t of target_probs(t) * P(first candidate = t)."""
    target = first_target_probs(pair, target_config)
    law = slem_first_candidate_law(pair, draft_config, max_support, k)
    return sum(target.get(token, 0.0) * mass for token, mass in law.items() if token is not None)
