"""Adversarial drafters across vocabularies (ALGORITHMS.md §8.4): the output law stays the target's.

Uniform over the drafter's whole vocabulary (special and byte tokens included); a point mass the target
rarely agrees with; a drafter whose vocabulary shares no token with the target's; the target itself as
drafter; drafts that end inside a two- or three-byte character; SLRS rounds over their enumeration
budget. Each runs the product's round as ``test_crossvocab_exact`` does, with fewer requests.
"""

from __future__ import annotations

import pytest

from coordinator.request import AlgorithmName
from coordinator.verify.slrs import DrafterStep, SlrsProposer
from coordinator.vocab.canonical import CanonicalVocab
from core.sampling import SamplingConfig
from tests.support.laws import assert_law, assert_rate, exact_law, greedy_output, reference_warp
from tests.support.population import LawCase, Population, PopulationRun, run_requests
from tests.support.toy_lm import TextLM, restrict_lm, text_lm, uniform_lm
from tests.support.toy_tokenizers import CORPUS, byte_level_toy, disjoint_word_toy, sentencepiece_toy
from tests.unit.crossvocab.crossvocab_cases import (
    DISJOINT_DRAFTER_RULES,
    DRAFTER_RULES,
    MULTIBYTE_DRAFTER_RULES,
    MULTIBYTE_TARGET_RULES,
    OUTPUT_TOKENS,
    TARGET_RULES,
    CrossPair,
    cross_case,
    direct_calls,
    first_acceptance,
    first_target_probs,
    make_pair,
)

NUM_TRIALS = 30_000
UNIFORM_TRIALS = 10_000  # a 600-token proposal per draft token: the slowest drafter to simulate
TLI, SLEM, SLRS = AlgorithmName.TLI, AlgorithmName.SLEM, AlgorithmName.SLRS
ALGORITHMS = [TLI, SLEM, SLRS]
IDS = [a.value for a in ALGORITHMS]


def run_and_check_law(case: LawCase, trials: int = NUM_TRIALS, seed: int = 0) -> Population:
    population = PopulationRun(case).run(trials, seed)
    assert_law(population.outputs, exact_law(case.target, case.frame.params.sampling, OUTPUT_TOKENS))
    return population


def first_rate(population: Population) -> tuple[int, int]:
    return int((population.first_accepted >= 1).sum()), len(population.first_accepted)


@pytest.fixture(scope="module")
def main_target(target_vocab: CanonicalVocab) -> TextLM:
    """The target LM of ``test_crossvocab_exact``, paired here with adversarial drafters."""
    return text_lm(target_vocab, TARGET_RULES)


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=IDS)
def test_uniform_drafter_over_its_whole_vocabulary(
    main_target: TextLM, drafter_vocab: CanonicalVocab, algorithm: AlgorithmName
) -> None:
    """Special tokens, byte tokens that are not text alone, duplicate spellings: all drafted."""
    pair = make_pair(main_target, uniform_lm(drafter_vocab))
    config = SamplingConfig(0.8)
    population = run_and_check_law(cross_case(pair, algorithm, config, drafter_vocab.size, 1), UNIFORM_TRIALS)
    assert_rate(*first_rate(population), first_acceptance(pair, algorithm, config, drafter_vocab.size, 1))


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=IDS)
def test_wrong_point_mass_drafter(
    main_target: TextLM, drafter_vocab: CanonicalVocab, algorithm: AlgorithmName
) -> None:
    """The drafter always proposes ' the'; the first position accepts it with the target's probability."""
    pair = make_pair(main_target, text_lm(drafter_vocab, [(b"", {b" the": 0.0})]))
    config = SamplingConfig(1.0)
    population = run_and_check_law(cross_case(pair, algorithm, config, 4, 3))
    p_the = first_target_probs(pair, config)[pair.target_vocab.representative[b" the"]]
    assert first_acceptance(pair, algorithm, config, 4, OUTPUT_TOKENS - 1) == pytest.approx(p_the, abs=1e-12)
    assert_rate(*first_rate(population), p_the)


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=IDS)
def test_drafter_vocabulary_disjoint_from_the_target(main_target: TextLM, algorithm: AlgorithmName) -> None:
    """TLI proposes nothing (every round is a plain target step); all stay exact."""
    vocab = CanonicalVocab.from_tokenizer(disjoint_word_toy())
    pair = make_pair(main_target, text_lm(vocab, DISJOINT_DRAFTER_RULES), checked=False)
    intersection = pair.alignment.intersection
    assert intersection is not None and intersection.mapped_count == 0
    config = SamplingConfig(0.7, top_k=4)
    population = run_and_check_law(cross_case(pair, algorithm, config, 4, 3))
    if algorithm is TLI:
        assert (population.first_candidates == 0).all()
        assert population.counts.rounds == OUTPUT_TOKENS * NUM_TRIALS, "one target token per round"


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("algorithm", [TLI, SLRS, SLEM], ids=["tli", "slrs", "slem"])
def test_drafter_equal_to_the_target(target_vocab: CanonicalVocab, algorithm: AlgorithmName, k: int) -> None:
    """Same tokenizer, same table: TLI and SLRS accept every candidate; SLEM stays exact.

    The table leaves out the lone bytes of 'é' here, so no round starts with committed bytes that the
    drafter's view lacks (see the next test).
    """
    target = restrict_lm(text_lm(target_vocab, TARGET_RULES), [b"\xc3", b"\xa9"])
    pair = make_pair(target, target)
    assert pair.drafter_to_target[: target_vocab.size] == [
        token if target_vocab.is_text_token(token) else -1 for token in range(target_vocab.size)
    ]
    config = SamplingConfig(0.9, top_p=0.95)
    population = run_and_check_law(cross_case(pair, algorithm, config, 8, k))
    if algorithm is not SLEM:
        assert population.counts.rejected == 0
        assert (population.first_accepted == min(k, OUTPUT_TOKENS - 1)).all()


def test_equal_drafter_rejects_only_where_its_view_lacks_pending_bytes(target_vocab: CanonicalVocab) -> None:
    """With lone 'é' bytes, a committed text can end inside the character; re-sync holds those bytes
    back from the drafter's view, so the identical drafter conditions on less text. Every other round
    accepts everything."""
    target = text_lm(target_vocab, TARGET_RULES)
    config = SamplingConfig(1.0)
    population = run_and_check_law(cross_case(make_pair(target, target), TLI, config, 8, 1))
    assert population.counts.pending > 0
    assert population.counts.rejected_without_pending == 0


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=IDS)
def test_drafts_ending_inside_a_multibyte_character(
    target_vocab: CanonicalVocab, drafter_vocab: CanonicalVocab, algorithm: AlgorithmName
) -> None:
    """'é' (2 bytes) and '€' (3 bytes) spelled byte by byte: drafts often stop inside a character."""
    pair = make_pair(
        text_lm(target_vocab, MULTIBYTE_TARGET_RULES), text_lm(drafter_vocab, MULTIBYTE_DRAFTER_RULES)
    )
    population = run_and_check_law(cross_case(pair, algorithm, SamplingConfig(1.0), 8, 2), 50_000)
    counts = population.counts
    if algorithm is SLEM:
        assert counts.held_back > 0.05 * counts.rounds, "drafted tails were held back"
    if algorithm is SLRS:
        assert counts.pending > 0, "rounds started inside a character (verified as SLEM)"
    greedy = cross_case(pair, algorithm, SamplingConfig(0.0), 8, 2)
    assert set(PopulationRun(greedy).run(300, seed=1).outputs) == {greedy_output(pair.target, OUTPUT_TOKENS)}


def test_slrs_rounds_over_the_enumeration_budget_fall_back_to_slem(
    target_vocab: CanonicalVocab, drafter_vocab: CanonicalVocab
) -> None:
    """The budget bounds the supports a round enumerates, step by step (as slrs.py says): a budget that
    cuts rounds short and one that sends every round to SLEM both keep the target's law."""
    pair = make_pair(text_lm(target_vocab, TARGET_RULES), text_lm(drafter_vocab, DRAFTER_RULES))
    config = SamplingConfig(1.0)
    cutting = run_and_check_law(cross_case(pair, SLRS, config, 16, 3, slrs_budget=12), 50_000)
    assert cutting.counts.over_budget == 0
    starved = run_and_check_law(cross_case(pair, SLRS, config, 16, 3, slrs_budget=1), seed=1)
    assert starved.counts.over_budget > 0.5 * starved.counts.rounds


def test_slrs_psi_is_the_law_of_the_first_proposal_of_rounds_within_budget(
    target_vocab: CanonicalVocab, drafter_vocab: CanonicalVocab
) -> None:
    """Exact enumeration over the drafter's 3-step sequences: with a budget that cuts rounds short, the
    proposals ``propose`` does make still follow the psi it reports (first and second positions)."""
    pair = make_pair(text_lm(target_vocab, TARGET_RULES), text_lm(drafter_vocab, DRAFTER_RULES))
    trie = pair.alignment.target_trie()
    bounded = SlrsProposer(trie, drafter_vocab.token_bytes, max_proposals=5, enumeration_budget=12)
    unbounded = SlrsProposer(trie, drafter_vocab.token_bytes, max_proposals=5)
    config = SamplingConfig(1.0)
    law: dict[int, float] = {}
    psi: dict[int, float] = {}
    cut = 0.0
    for _, steps, weight in drafter_step_sequences(pair, config, 3):
        result = bounded.propose(steps)
        cut += weight * (len(result.proposals) < len(unbounded.propose(steps).proposals))
        if result.proposals:
            first = result.proposals[0]
            law[first.target_token] = law.get(first.target_token, 0.0) + weight
            psi = dict(zip(first.psi_ids, first.psi_probs, strict=True))
    assert cut > 0.1, "the budget must cut some rounds short"
    made = sum(law.values())
    assert {t: law.get(t, 0.0) / made for t in psi} == pytest.approx(psi, abs=1e-9)


def drafter_step_sequences(
    pair: CrossPair, config: SamplingConfig, k: int
) -> list[tuple[tuple[int, ...], list[DrafterStep], float]]:
    """Every k-step drafting from the empty context: (draft tokens, their DrafterSteps, probability)."""
    sequences: list[tuple[tuple[int, ...], list[DrafterStep], float]] = [((), [], 1.0)]
    for _ in range(k):
        grown = []
        for drafts, steps, weight in sequences:
            logits = pair.drafter.support_logits(pair.drafter_vocab.bytes_of(drafts))
            probs = reference_warp(logits, config)
            support = [(t, float(p)) for t, p in zip(pair.drafter.support, probs, strict=True) if p > 0]
            ids, values = tuple(t for t, _ in support), tuple(p for _, p in support)
            for token, prob in support:
                step = DrafterStep(token, ids, values)
                grown.append(((*drafts, token), [*steps, step], weight * prob))
        sequences = grown
    return sequences


def test_slrs_stops_where_the_target_cannot_spell_the_drafted_text() -> None:
    """A target vocabulary without 'y' and a drafter that writes ' theory': SLRS proposes what the target
    can spell and stops before the 'y' (it used to propose no token, -1, and the request failed)."""
    corpus = [text.replace("y", "") for text in CORPUS]
    target_vocab = CanonicalVocab.from_tokenizer(byte_level_toy(300, corpus, every_byte=False))
    drafter_vocab = CanonicalVocab.from_tokenizer(sentencepiece_toy())
    assert b"y" not in target_vocab.representative and b" theory" in drafter_vocab.representative
    target = text_lm(target_vocab, [(b"", {b" the": 0.5, b" ": 0.2, b"or": 0.3})])
    drafter = text_lm(drafter_vocab, [(b"", {b" theory": 1.0, b" the": 0.2})])
    pair = make_pair(target, drafter)
    case = cross_case(pair, SLRS, SamplingConfig(1.0), 8, 3)
    population = run_and_check_law(case)
    assert population.counts.fallbacks == 0 and population.counts.rejected < population.counts.rounds
    calls = direct_calls(pair, case)
    assert len(run_requests(case, calls, range(20))) == 20  # through run_round: no request fails
