"""SLRS is lossless: the proposer's psi is the exact proposal law, and the output law is the target's.

Toy setting (ALGORITHMS.md §8.1): two different toy vocabularies over the bytes {a, b}, a target LM over
target tokens and a drafter LM over drafter tokens that conditions on the committed string.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterator, Sequence

import pytest
import torch
from scipy.stats import chisquare

from coordinator.verify.slrs import DrafterStep, SlrsProposer, TokenTrie
from coordinator.verify.speculative import accept_speculative, acceptance_uniforms, output_tokens
from core.sampling import SamplingConfig, score_candidates

TARGET_VOCAB: list[bytes | None] = [b"a", b"b", b"ab", b"ba", b"abb", None]  # 5 = EOS (special)
TARGET_EOS = 5
DRAFTER_VOCAB: list[bytes | None] = [b"a", b"b", b"aa", b"bab", b"ab", None]  # 5 = special
LENGTH = 3


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    """Tiny tensors: one intra-op thread avoids thread-pool overhead dominating the run time."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def target_probs(prefix: Sequence[int], temperature: float) -> torch.Tensor:
    """[vocab] target distribution after ``prefix`` (target ids), warped by temperature."""
    last = prefix[-1] if prefix else -1
    base = torch.tensor([1.0, 2.0, 1.5, 0.5, 1.0, 0.3], dtype=torch.float64)
    bump = torch.zeros(6, dtype=torch.float64)
    bump[(last + 2) % 5] = 1.5
    logits = torch.log(base) + bump
    if temperature == 0:
        return torch.nn.functional.one_hot(torch.argmax(logits), 6).to(torch.float64)
    return torch.softmax(logits / temperature, dim=-1)


def drafter_probs(text: bytes) -> torch.Tensor:
    """[vocab] drafter distribution given the string so far (never exactly the target's)."""
    weights = torch.tensor([2.0, 1.0, 0.7, 0.4, 1.2, 0.2], dtype=torch.float64)
    weights[len(text) % 4] += 1.0
    if text.endswith(b"b"):
        weights[0] += 1.0
    return weights / weights.sum()


def enumerate_target_law(temperature: float) -> dict[tuple[int, ...], float]:
    law: dict[tuple[int, ...], float] = {}

    def walk(prefix: tuple[int, ...], mass: float) -> None:
        if len(prefix) == LENGTH or (prefix and prefix[-1] == TARGET_EOS):
            padded = prefix + (TARGET_EOS,) * (LENGTH - len(prefix))
            law[padded] = law.get(padded, 0.0) + mass
            return
        probs = target_probs(prefix, temperature)
        for token in range(6):
            if probs[token] > 0:
                walk((*prefix, token), mass * float(probs[token]))

    walk((), 1.0)
    return law


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


def _text(tokens: Sequence[int]) -> bytes:
    return b"".join(TARGET_VOCAB[t] or b"" for t in tokens)


def run_slrs(
    proposer: SlrsProposer, temperature: float, k: int, generator: torch.Generator
) -> tuple[int, ...]:
    """One generation of LENGTH target tokens through the SLRS pipeline (target side = score_candidates)."""
    committed: list[int] = []
    # target_probs() already applies the temperature: the target side must not warp again.
    config = SamplingConfig(temperature=1.0)
    while len(committed) < LENGTH and (not committed or committed[-1] != TARGET_EOS):
        steps = _draft_steps(_text(committed), k, generator)
        proposals = proposer.propose(steps).proposals
        candidates = [p.target_token for p in proposals]
        rows = [target_probs(committed + candidates[:i], temperature) for i in range(len(candidates) + 1)]
        logits = torch.log(torch.stack(rows))
        psi = torch.zeros(len(candidates), 6, dtype=torch.float64)
        for i, proposal in enumerate(proposals):
            psi[i, list(proposal.psi_ids)] = torch.tensor(proposal.psi_probs, dtype=torch.float64)
        result = score_candidates(logits, torch.tensor(candidates, dtype=torch.long), psi, config, generator)
        cand = torch.tensor(candidates, dtype=torch.long)
        draft_p = psi[torch.arange(len(candidates)), cand] if candidates else torch.zeros(0)
        accepted = accept_speculative(
            result.candidate_target_probs, draft_p, acceptance_uniforms(len(candidates), generator)
        )
        recovered = result.recovered_tokens.tolist() if result.recovered_tokens is not None else None
        committed += output_tokens(candidates, accepted, result.target_samples.tolist(), recovered)
    if TARGET_EOS in committed:
        committed = committed[: committed.index(TARGET_EOS) + 1]
    committed = committed[:LENGTH]
    return tuple(committed + [TARGET_EOS] * (LENGTH - len(committed)))


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


@pytest.mark.parametrize(("temperature", "k"), [(1.0, 2), (0.7, 3), (1.5, 1)])
def test_slrs_output_law_equals_target_law(temperature: float, k: int) -> None:
    proposer = SlrsProposer(TokenTrie(TARGET_VOCAB), DRAFTER_VOCAB, max_proposals=k + 2)
    generator = torch.Generator().manual_seed(1234)
    law = enumerate_target_law(temperature)
    runs = 6_000
    counts = Counter(run_slrs(proposer, temperature, k, generator) for _ in range(runs))
    outcomes = sorted(law)
    assert set(counts) <= set(outcomes)
    observed = [counts[o] for o in outcomes]
    expected = [law[o] * runs for o in outcomes]
    assert chisquare(observed, expected).pvalue > 1e-4
    tv = 0.5 * sum(abs(counts[o] / runs - law[o]) for o in outcomes)
    # Expected TV of an exact sampler's empirical law: 0.5 * sum E|N(0, p(1-p)/n)|; allow twice that.
    noise = 0.5 * sum(math.sqrt(2 * law[o] * (1 - law[o]) / (math.pi * runs)) for o in outcomes)
    assert tv < 2 * noise, (tv, noise)


def test_slrs_greedy_equals_target_argmax() -> None:
    proposer = SlrsProposer(TokenTrie(TARGET_VOCAB), DRAFTER_VOCAB, max_proposals=4)
    generator = torch.Generator().manual_seed(3)
    (expected,) = [o for o, p in enumerate_target_law(0.0).items() if p == 1.0]
    for _ in range(200):
        assert run_slrs(proposer, 0.0, 3, generator) == expected


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


def test_all_outcomes_enumerated() -> None:
    law = enumerate_target_law(1.0)
    assert math.isclose(sum(law.values()), 1.0)
    assert all(len(o) == LENGTH for o in law)
    assert len(law) <= len(list(itertools.product(range(6), repeat=LENGTH)))
