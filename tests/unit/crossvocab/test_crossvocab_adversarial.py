"""Adversarial drafters across vocabularies (ALGORITHMS.md §8.4): the output law stays the target's.

Uniform over the drafter's whole vocabulary (special and byte tokens included); a point mass the target
rarely agrees with; a drafter whose vocabulary shares no token with the target's; the target itself as
drafter; drafts that end inside a two- or three-byte character; SLRS rounds over their enumeration
budget. Each runs the pipeline of ``test_crossvocab_exact`` with fewer generations.
"""

from __future__ import annotations

import math

import pytest

from coordinator.verify.slrs import DrafterStep, SlrsProposer
from coordinator.vocab.canonical import CanonicalVocab
from coordinator.vocab.intersection import build_intersection
from core.sampling import SamplingConfig
from tests.unit.crossvocab.crossvocab_lms import (
    DISJOINT_DRAFTER_RULES,
    DRAFTER_RULES,
    MULTIBYTE_DRAFTER_RULES,
    MULTIBYTE_TARGET_RULES,
    NUM_OUTPUT_TOKENS,
    TARGET_RULES,
    TextLM,
    disjoint_word_toy,
    exact_law,
    greedy_tokens,
    outcome_code,
    restrict_lm,
    table_lm,
    uniform_lm,
)
from tests.unit.crossvocab.crossvocab_methods import Method, Pair, make_pair
from tests.unit.crossvocab.crossvocab_oracles import (
    first_target_probs,
    slem_first_acceptance,
    slrs_first_acceptance,
    tli_first_acceptance,
)
from tests.unit.crossvocab.crossvocab_pipeline import RunResult, Setup, VectorisedRun, run_literal
from tests.unit.verify.verify_toys import assert_law, reference_warp

NUM_TRIALS = 30_000
UNIFORM_TRIALS = 10_000  # a 448-token proposal per draft token: the slowest drafter to simulate
METHODS = list(Method)
METHOD_IDS = [m.value for m in METHODS]


def run_and_check_law(setup: Setup, num_trials: int = NUM_TRIALS, seed: int = 0) -> RunResult:
    run = VectorisedRun(setup, seed).run(num_trials)
    assert (run.outcomes >= 0).all()
    assert_law(run.outcomes, exact_law(setup.pair.target, setup.target_config))
    return run


def assert_first_rate(run: RunResult, oracle: float) -> None:
    trials = len(run.first_accepted)
    sigma = math.sqrt(max(oracle * (1 - oracle), 1e-12) / trials)
    rate = float((run.first_accepted >= 1).mean())
    assert abs(rate - oracle) <= 5 * sigma + 1e-9, f"rate {rate:.4f} vs oracle {oracle:.4f}"


@pytest.fixture(scope="module")
def main_target(target_vocab: CanonicalVocab) -> TextLM:
    """The target LM of ``test_crossvocab_exact``, paired here with adversarial drafters."""
    return table_lm(target_vocab, TARGET_RULES)


@pytest.mark.parametrize("method", METHODS, ids=METHOD_IDS)
def test_uniform_drafter_over_its_whole_vocabulary(
    main_target: TextLM, drafter_vocab: CanonicalVocab, method: Method
) -> None:
    """Special tokens, byte tokens that are not text alone, duplicate spellings: all drafted."""
    pair = make_pair(main_target, uniform_lm(drafter_vocab))
    config = SamplingConfig(0.8)
    setup = Setup(pair, method, config, SamplingConfig(1.0), drafter_vocab.size, 1)
    run = run_and_check_law(setup, num_trials=UNIFORM_TRIALS)
    if method is Method.TLI:
        assert_first_rate(run, tli_first_acceptance(pair, config, SamplingConfig(1.0), drafter_vocab.size))
    elif method is Method.SLRS:
        assert_first_rate(run, slrs_first_acceptance(pair, config, SamplingConfig(1.0), drafter_vocab.size))
    else:
        assert_first_rate(
            run, slem_first_acceptance(pair, config, SamplingConfig(1.0), drafter_vocab.size, 1)
        )


@pytest.mark.parametrize("method", METHODS, ids=METHOD_IDS)
def test_wrong_point_mass_drafter(main_target: TextLM, drafter_vocab: CanonicalVocab, method: Method) -> None:
    """The drafter always proposes ' the'; the first position accepts it with the target's probability."""
    pair = make_pair(main_target, table_lm(drafter_vocab, [(b"", {b" the": 0.0})]))
    config = SamplingConfig(1.0)
    run = run_and_check_law(Setup(pair, method, config, SamplingConfig(1.0), 4, 3))
    p_the = first_target_probs(pair, config)[pair.target_vocab.representative[b" the"]]
    oracles = {
        Method.TLI: tli_first_acceptance(pair, config, SamplingConfig(1.0), 4),
        Method.SLRS: slrs_first_acceptance(pair, config, SamplingConfig(1.0), 4),
        Method.SLEM: slem_first_acceptance(pair, config, SamplingConfig(1.0), 4, 3),
    }
    assert oracles[method] == pytest.approx(p_the, abs=1e-12)
    assert_first_rate(run, p_the)


@pytest.mark.parametrize("method", METHODS, ids=METHOD_IDS)
def test_drafter_vocabulary_disjoint_from_the_target(main_target: TextLM, method: Method) -> None:
    """TLI proposes nothing (it falls back to target sampling at every position); all stay exact."""
    vocab = CanonicalVocab.from_tokenizer(disjoint_word_toy())
    assert build_intersection(vocab, main_target.vocab).mapped_count == 0
    pair = make_pair(main_target, table_lm(vocab, DISJOINT_DRAFTER_RULES))
    config = SamplingConfig(0.7, top_k=4)
    run = run_and_check_law(Setup(pair, method, config, SamplingConfig(1.0), 4, 3))
    if method is Method.TLI:
        assert (run.first_candidates == 0).all()
        assert run.counts.rounds == NUM_OUTPUT_TOKENS * NUM_TRIALS, "one target token per round"


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("method", [Method.TLI, Method.SLRS, Method.SLEM], ids=["tli", "slrs", "slem"])
def test_drafter_equal_to_the_target(target_vocab: CanonicalVocab, method: Method, k: int) -> None:
    """Same tokenizer, same table: TLI and SLRS accept every candidate; SLEM stays exact.

    The table leaves out the lone bytes of 'é' here, so no round starts with committed bytes that the
    drafter's view lacks (see the next test).
    """
    target = restrict_lm(table_lm(target_vocab, TARGET_RULES), [b"\xc3", b"\xa9"])
    pair = make_pair(target, target)
    assert pair.drafter_to_target.tolist()[: target_vocab.size] == [
        token if target_vocab.is_text_token(token) else -1 for token in range(target_vocab.size)
    ]
    config = SamplingConfig(0.9, top_p=0.95)
    run = run_and_check_law(Setup(pair, method, config, config, 8, k))
    if method is not Method.SLEM:
        assert run.counts.rejected == 0
        assert (run.first_accepted == k).all()


def test_equal_drafter_rejects_only_where_its_view_lacks_pending_bytes(target_vocab: CanonicalVocab) -> None:
    """With lone 'é' bytes, a committed text can end inside the character; re-sync holds those bytes
    back from the drafter's view, so the identical drafter conditions on less text. Every other round
    accepts everything."""
    target = table_lm(target_vocab, TARGET_RULES)
    config = SamplingConfig(1.0)
    run = run_and_check_law(Setup(make_pair(target, target), Method.TLI, config, config, 8, 1))
    assert run.counts.rejected_without_pending == 0


@pytest.mark.parametrize("method", METHODS, ids=METHOD_IDS)
def test_drafts_ending_inside_a_multibyte_character(
    target_vocab: CanonicalVocab, drafter_vocab: CanonicalVocab, method: Method
) -> None:
    """'é' (2 bytes) and '€' (3 bytes) spelled byte by byte: drafts often stop inside a character."""
    pair = make_pair(
        table_lm(target_vocab, MULTIBYTE_TARGET_RULES), table_lm(drafter_vocab, MULTIBYTE_DRAFTER_RULES)
    )
    config = SamplingConfig(1.0)
    run = run_and_check_law(Setup(pair, method, config, config, 8, 2), num_trials=50_000)
    if method is Method.SLEM:
        assert run.counts.held_back > 0.05 * run.counts.rounds, "drafted tails were held back"
    if method is Method.SLRS:
        assert run.counts.pending_fallback > 0, "rounds started inside a character"
    greedy = SamplingConfig(0.0)
    expected = greedy_tokens(pair.target)
    greedy_run = VectorisedRun(Setup(pair, method, greedy, config, 8, 2), seed=1).run(300)
    assert set(greedy_run.outcomes.tolist()) == {outcome_code(pair.target, expected)}
    assert run_literal(Setup(pair, method, greedy, config, 8, 2), seed=2) == expected


def test_slrs_rounds_over_the_enumeration_budget_fall_back_to_slem(
    target_vocab: CanonicalVocab, drafter_vocab: CanonicalVocab
) -> None:
    """The budget bounds the supports a round enumerates, step by step (as slrs.py says): a budget that
    cuts rounds short and one that sends every round to SLEM both keep the target's law."""
    pair = make_pair(table_lm(target_vocab, TARGET_RULES), table_lm(drafter_vocab, DRAFTER_RULES))
    config = SamplingConfig(1.0)
    law = exact_law(pair.target, config)
    cutting = VectorisedRun(Setup(pair, Method.SLRS, config, config, 16, 3, slrs_budget=12), seed=0).run(
        50_000
    )
    assert cutting.counts.budget_fallback == 0
    assert_law(cutting.outcomes, law)
    starved = VectorisedRun(Setup(pair, Method.SLRS, config, config, 16, 3, slrs_budget=1), seed=1).run(
        30_000
    )
    assert starved.counts.budget_fallback > 0.5 * starved.counts.rounds
    assert_law(starved.outcomes, law)


def test_slrs_psi_is_the_law_of_the_first_proposal_of_rounds_within_budget(
    target_vocab: CanonicalVocab, drafter_vocab: CanonicalVocab
) -> None:
    """Exact enumeration over the drafter's 3-step sequences: with a budget that cuts rounds short, the
    proposals ``propose`` does make still follow the psi it reports (first and second positions)."""
    pair = make_pair(table_lm(target_vocab, TARGET_RULES), table_lm(drafter_vocab, DRAFTER_RULES))
    bounded = SlrsProposer(
        pair.target_trie, drafter_vocab.token_bytes, max_proposals=5, enumeration_budget=12
    )
    unbounded = SlrsProposer(pair.target_trie, drafter_vocab.token_bytes, max_proposals=5)
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
    pair: Pair, config: SamplingConfig, k: int
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
