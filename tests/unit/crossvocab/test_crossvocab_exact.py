"""TLI, SLEM and SLRS are lossless across two different toy tokenizers (ALGORITHMS.md §8.1-8.3).

Each law test runs 1e5 requests of ``OUTPUT_TOKENS`` target tokens through the product's round
(``tests.support.population``: ``draft_call`` -> drafter -> ``candidates`` -> ``score_call`` -> target ->
``decide`` -> ``commit`` -> ``next_view``, the toy services drafting and scoring with the model service's
math) and compares the outputs with the target's exact law by a chi-square test and a TV-distance bound;
the first round's first-position acceptance is compared with each method's oracle (§8.2). A few requests
also go through ``run_round`` itself, over toy model services, with the request's own seeds.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from coordinator.request import AlgorithmName
from coordinator.vocab.canonical import CanonicalVocab
from core.sampling import SamplingConfig
from tests.support.laws import assert_law, assert_rate, exact_law, greedy_output
from tests.support.population import LawCase, Population, PopulationRun, run_requests
from tests.support.toy_lm import text_lm
from tests.unit.crossvocab.crossvocab_cases import (
    DRAFTER_EOS,
    DRAFTER_RULES,
    OUTPUT_TOKENS,
    TARGET_RULES,
    CrossPair,
    cross_case,
    direct_calls,
    drafter_rules_with_eos,
    first_acceptance,
    make_pair,
    tli_first_acceptance,
    tli_first_acceptance_q_over_z,
)

NUM_TRIALS = 100_000
TLI, SLEM, SLRS = AlgorithmName.TLI, AlgorithmName.SLEM, AlgorithmName.SLRS
ALGORITHMS = [TLI, SLEM, SLRS]
IDS = [a.value for a in ALGORITHMS]

# name -> (request's warpers, the drafter's max_support, k, confidence threshold)
CASES: dict[str, tuple[SamplingConfig, int, int, float]] = {
    "t1.0": (SamplingConfig(1.0), 16, 3, 0.0),
    "t0.7-truncated-drafter": (SamplingConfig(0.7), 3, 3, 0.0),
    "top-k-top-p": (SamplingConfig(1.0, top_k=4, top_p=0.8), 16, 2, 0.0),
    "low-confidence-stops": (SamplingConfig(1.0), 16, 3, 0.45),
}


@pytest.fixture(scope="module")
def pair(target_vocab: CanonicalVocab, drafter_vocab: CanonicalVocab) -> CrossPair:
    return make_pair(text_lm(target_vocab, TARGET_RULES), text_lm(drafter_vocab, DRAFTER_RULES))


def case_of(pair: CrossPair, algorithm: AlgorithmName, name: str) -> LawCase:
    config, max_support, k, threshold = CASES[name]
    return cross_case(pair, algorithm, config, max_support, k, confidence_threshold=threshold)


@pytest.fixture(scope="module")
def runs(pair: CrossPair) -> Callable[[AlgorithmName, str], Population]:
    """Runs each (algorithm, case) once for the module: the law and the oracle tests share it."""
    cache: dict[tuple[AlgorithmName, str], Population] = {}

    def get(algorithm: AlgorithmName, name: str) -> Population:
        if (algorithm, name) not in cache:
            seed = 10 + 3 * list(CASES).index(name) + ALGORITHMS.index(algorithm)
            cache[(algorithm, name)] = PopulationRun(case_of(pair, algorithm, name)).run(NUM_TRIALS, seed)
        return cache[(algorithm, name)]

    return get


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=IDS)
def test_output_law_equals_the_target_law(
    pair: CrossPair, runs: Callable[[AlgorithmName, str], Population], algorithm: AlgorithmName, name: str
) -> None:
    population = runs(algorithm, name)
    assert_law(population.outputs, exact_law(pair.target, CASES[name][0], OUTPUT_TOKENS))
    counts = population.counts
    assert 0 < counts.rejected < counts.rounds, "both acceptances and rejections happen"
    if CASES[name][3] > 0:
        assert counts.short_drafts > 0.1 * counts.rounds, "low-confidence tokens ended drafts"


@pytest.mark.parametrize("name", [n for n, case in CASES.items() if case[3] == 0])
@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=IDS)
def test_first_position_acceptance_matches_the_oracle(
    pair: CrossPair, runs: Callable[[AlgorithmName, str], Population], algorithm: AlgorithmName, name: str
) -> None:
    population = runs(algorithm, name)
    if algorithm is not SLEM:
        assert (population.first_candidates >= 1).all(), "every first round proposes a candidate here"
    config, max_support, k, _ = CASES[name]
    oracle = first_acceptance(pair, algorithm, config, max_support, min(k, OUTPUT_TOKENS - 1))
    assert 0.05 < oracle < 0.95, "an oracle that tells something"
    assert_rate(int((population.first_accepted >= 1).sum()), NUM_TRIALS, oracle)


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=IDS)
def test_drafter_stop_tokens_inside_drafts(
    target_vocab: CanonicalVocab, drafter_vocab: CanonicalVocab, algorithm: AlgorithmName
) -> None:
    """The drafter's end of sequence has mass: drafts end with it (kept), SLRS cannot propose it (psi is
    renormalised over what it can propose), TLI's mask leaves it out; the law stays the target's."""
    eos = drafter_vocab.tokenizer.token_to_id(DRAFTER_EOS)
    target, drafter = text_lm(target_vocab, TARGET_RULES), text_lm(drafter_vocab, drafter_rules_with_eos(eos))
    pair = make_pair(target, drafter, drafter_eos=(eos,))
    case = cross_case(pair, algorithm, SamplingConfig(1.0), 16, 3)
    population = PopulationRun(case).run(NUM_TRIALS, seed=40 + ALGORITHMS.index(algorithm))
    assert_law(population.outputs, exact_law(target, SamplingConfig(1.0), OUTPUT_TOKENS))
    if algorithm is not TLI:
        assert population.counts.short_drafts > 0.05 * population.counts.rounds, "drafts ended at EOS"


def test_tli_oracle_is_min_of_target_and_q_over_z(pair: CrossPair) -> None:
    """Masking before a temperature-only warp is q / Z on the intersection, Z the drafter's mass there."""
    for temperature in (0.7, 1.0):
        config = SamplingConfig(temperature)
        assert tli_first_acceptance(pair, config, 16) == pytest.approx(
            tli_first_acceptance_q_over_z(pair, config), abs=1e-12
        )


@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=IDS)
def test_greedy_equals_the_target_argmax_sequence(pair: CrossPair, algorithm: AlgorithmName) -> None:
    expected = greedy_output(pair.target, OUTPUT_TOKENS)
    case = cross_case(pair, algorithm, SamplingConfig(0.0), 16, 3)
    population = PopulationRun(case).run(500, seed=3)
    assert set(population.outputs) == {expected}
    assert run_requests(case, direct_calls(pair, case), range(5)) == [expected] * 5


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=IDS)
def test_run_round_over_toy_services_follows_the_target_law(
    pair: CrossPair, algorithm: AlgorithmName
) -> None:
    """``run_round`` end to end (each request its own seeded draws) on fewer requests."""
    config = SamplingConfig(1.0)
    case = cross_case(pair, algorithm, config, 16, 3)
    outputs = run_requests(case, direct_calls(pair, case), range(600))
    assert_law(outputs, exact_law(pair.target, config, OUTPUT_TOKENS))
