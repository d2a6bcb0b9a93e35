"""SLRS's proposal process: the byte trie, psi as the exact law of a proposal, where the process stops.

Toy setting (ALGORITHMS.md §8.1): two different toy vocabularies over the bytes {a, b}. SLRS's output law
through the product's round is tested in ``tests/unit/crossvocab``.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter

import torch

from coordinator.verify.slrs import DrafterStep, SlrsProposer, TokenTrie

TARGET_VOCAB: list[bytes | None] = [b"a", b"b", b"ab", b"ba", b"abb", None]  # 5 = EOS (special)
DRAFTER_VOCAB: list[bytes | None] = [b"a", b"b", b"aa", b"bab", b"ab", None]  # 5 = special


def drafter_probs(text: bytes) -> torch.Tensor:
    """[vocab] drafter distribution given the string so far."""
    weights = torch.tensor([2.0, 1.0, 0.7, 0.4, 1.2, 0.2], dtype=torch.float64)
    weights[len(text) % 4] += 1.0
    if text.endswith(b"b"):
        weights[0] += 1.0
    return weights / weights.sum()


def _draft_steps(text: bytes, k: int, generator: torch.Generator) -> list[DrafterStep]:
    steps = []
    for _ in range(k):
        probs = drafter_probs(text)
        token = int(torch.multinomial(probs, 1, generator=generator))
        steps.append(DrafterStep(token, list(range(6)), probs.tolist()))
        data = DRAFTER_VOCAB[token]
        if data is None:
            break
        text += data
    return steps


def test_trie_longest_prefix_and_decided() -> None:
    trie = TokenTrie(TARGET_VOCAB)
    assert trie.longest_prefix(b"abba") == (4, 3)
    assert trie.longest_prefix(b"ba") == (3, 2)
    assert trie.longest_prefix(b"") == (-1, 0)
    assert not trie.is_decided(b"a")  # "ab", "abb" extend it
    assert trie.is_decided(b"ba")  # nothing extends "ba"
    assert trie.is_decided(b"abb")
    assert not trie.is_decided(b"")


def test_psi_is_the_exact_law_of_the_first_proposal() -> None:
    proposer = SlrsProposer(TokenTrie(TARGET_VOCAB), DRAFTER_VOCAB, max_proposals=4)
    generator = torch.Generator().manual_seed(7)
    counts: Counter[int] = Counter()
    psi_seen: dict[int, float] = {}
    trials = 20_000
    for _ in range(trials):
        proposals = proposer.propose(_draft_steps(b"", 2, generator)).proposals
        if proposals:
            counts[proposals[0].target_token] += 1
            psi_seen = dict(zip(proposals[0].psi_ids, proposals[0].psi_probs, strict=True))
    total = sum(counts.values())
    for token, prob in psi_seen.items():
        assert abs(counts[token] / total - prob) < 4 * math.sqrt(prob * (1 - prob) / total) + 1e-3


def test_over_budget_round_makes_no_proposal() -> None:
    proposer = SlrsProposer(TokenTrie(TARGET_VOCAB), DRAFTER_VOCAB, max_proposals=4, enumeration_budget=5)
    steps = _draft_steps(b"", 2, torch.Generator().manual_seed(0))
    result = proposer.propose(steps)
    assert result.over_budget and result.proposals == ()


def test_special_drafter_token_stops_the_process() -> None:
    proposer = SlrsProposer(TokenTrie(TARGET_VOCAB), DRAFTER_VOCAB, max_proposals=4)
    steps = [DrafterStep(5, [0, 5], [0.5, 0.5])]
    assert proposer.propose(steps).proposals == ()
    # A decided leftover still yields its deterministic proposals.
    decided = proposer.propose([], leftover=b"ba")
    assert [p.target_token for p in decided.proposals] == [3]
    assert decided.proposals[0].psi_probs == (1.0,)


def test_a_byte_the_target_cannot_spell_stops_the_proposals() -> None:
    """Drafted text 'ac': 'a' is proposed, then the leftover 'c' is decided but no target token spells it.
    The process stops there (decided from drafted bytes alone) instead of proposing no token (-1)."""
    drafter_vocab = [*DRAFTER_VOCAB, b"ac", b"c"]
    ac, c = len(DRAFTER_VOCAB), len(DRAFTER_VOCAB) + 1
    proposer = SlrsProposer(TokenTrie(TARGET_VOCAB), drafter_vocab, max_proposals=4)
    result = proposer.propose([DrafterStep(ac, [ac, 0, 1], [0.5, 0.3, 0.2]), DrafterStep(0, [0], [1.0])])
    assert [p.target_token for p in result.proposals] == [0]
    assert result.proposals[0].psi_ids == (0, 1) and result.leftover == b"c"
    assert proposer.propose([DrafterStep(c, [c, 0], [0.5, 0.5])]).proposals == ()  # no prefix at all
    for steps in itertools.product([ac, c, 0, 1, 2], repeat=3):
        drafted = proposer.propose([DrafterStep(t, [t], [1.0]) for t in steps])
        assert all(p.target_token >= 0 for p in drafted.proposals), steps
