"""TLI, SLEM and SLRS are lossless across two different toy tokenizers (ALGORITHMS.md §8.1-8.3).

The target speaks byte-level BPE ids, the drafter SentencePiece ids (dummy prefix, byte fallback); both
are explicit tables keyed by the text so far (``crossvocab_lms``). Each test runs the whole pure pipeline
(drafting on the drafter's own view, the round plan of the method, the target's Score step, acceptance,
commit and drafter re-sync after every round) until 1e5 generations hold 3 target tokens, and compares
them with the target's exact joint law by a chi-square test and a TV-distance bound; the first round's
first-position acceptance is compared with each method's oracle (§8.2).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from coordinator.vocab.canonical import CanonicalVocab
from core.sampling import SamplingConfig
from tests.unit.crossvocab.crossvocab_lms import (
    DRAFTER_RULES,
    TARGET_RULES,
    exact_law,
    greedy_tokens,
    outcome_code,
    table_lm,
)
from tests.unit.crossvocab.crossvocab_methods import Method, Pair, make_pair
from tests.unit.crossvocab.crossvocab_oracles import (
    slem_first_acceptance,
    slrs_first_acceptance,
    tli_first_acceptance,
    tli_first_acceptance_q_over_z,
)
from tests.unit.crossvocab.crossvocab_pipeline import RunResult, Setup, VectorisedRun, run_literal
from tests.unit.verify.verify_toys import assert_law

NUM_TRIALS = 100_000

# name -> (target config, drafter config, drafter max_support, k)
CASES: dict[str, tuple[SamplingConfig, SamplingConfig, int, int]] = {
    "t1.0": (SamplingConfig(1.0), SamplingConfig(1.0), 16, 3),
    "t0.7-truncated-drafter": (SamplingConfig(0.7), SamplingConfig(0.7), 3, 3),
    "top-k-top-p": (SamplingConfig(1.0, top_k=4, top_p=0.9), SamplingConfig(1.0, top_p=0.8), 16, 2),
}
METHODS = list(Method)


@pytest.fixture(scope="module")
def pair(target_vocab: CanonicalVocab, drafter_vocab: CanonicalVocab) -> Pair:
    return make_pair(table_lm(target_vocab, TARGET_RULES), table_lm(drafter_vocab, DRAFTER_RULES))


@pytest.fixture(scope="module")
def runs(pair: Pair) -> Callable[[Method, str], RunResult]:
    """Runs each (method, case) once for the module: the law and the oracle tests share it."""
    cache: dict[tuple[Method, str], RunResult] = {}

    def get(method: Method, case: str) -> RunResult:
        if (method, case) not in cache:
            target_config, draft_config, max_support, k = CASES[case]
            setup = Setup(pair, method, target_config, draft_config, max_support, k)
            seed = 10 + 3 * list(CASES).index(case) + METHODS.index(method)
            cache[(method, case)] = VectorisedRun(setup, seed).run(NUM_TRIALS)
        return cache[(method, case)]

    return get


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("method", METHODS, ids=[m.value for m in METHODS])
def test_output_law_equals_the_target_law(
    pair: Pair, runs: Callable[[Method, str], RunResult], method: Method, case: str
) -> None:
    run = runs(method, case)
    assert (run.outcomes >= 0).all()
    assert_law(run.outcomes, exact_law(pair.target, CASES[case][0]))
    assert 0 < run.counts.rejected < run.counts.rounds, "both acceptances and rejections happen"


def first_position_oracle(pair: Pair, method: Method, case: str) -> float:
    target_config, draft_config, max_support, k = CASES[case]
    if method is Method.TLI:
        return tli_first_acceptance(pair, target_config, draft_config, max_support)
    if method is Method.SLRS:
        return slrs_first_acceptance(pair, target_config, draft_config, max_support)
    return slem_first_acceptance(pair, target_config, draft_config, max_support, k)


def assert_rate(successes: int, trials: int, oracle: float) -> None:
    """A binomial rate within 5 standard deviations of its oracle."""
    sigma = math.sqrt(max(oracle * (1 - oracle), 1e-12) / trials)
    rate = successes / trials
    assert abs(rate - oracle) <= 5 * sigma + 1e-9, (
        f"rate {rate:.4f} vs oracle {oracle:.4f} (sigma {sigma:.4f})"
    )


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("method", METHODS, ids=[m.value for m in METHODS])
def test_first_position_acceptance_matches_the_oracle(
    pair: Pair, runs: Callable[[Method, str], RunResult], method: Method, case: str
) -> None:
    run = runs(method, case)
    proposed = run.first_candidates >= 1
    if method is not Method.SLEM:
        assert proposed.all(), "every first round proposes a candidate here"
    oracle = first_position_oracle(pair, method, case)
    assert 0.05 < oracle < 0.95, "an oracle that tells something"
    assert_rate(int((run.first_accepted >= 1).sum()), len(run.first_accepted), oracle)


def test_tli_oracle_is_min_of_target_and_q_over_z(pair: Pair) -> None:
    """Masking before a temperature-only warp is q / Z on the intersection, Z the drafter's mass there."""
    for temperature in (0.7, 1.0):
        config = SamplingConfig(temperature)
        assert tli_first_acceptance(pair, config, config, 16) == pytest.approx(
            tli_first_acceptance_q_over_z(pair, config, config), abs=1e-12
        )


@pytest.mark.parametrize(
    "draft_config", [SamplingConfig(1.0), SamplingConfig(0.0)], ids=["sampled", "greedy"]
)
@pytest.mark.parametrize("method", METHODS, ids=[m.value for m in METHODS])
def test_greedy_equals_the_target_argmax_sequence(
    pair: Pair, method: Method, draft_config: SamplingConfig
) -> None:
    greedy = SamplingConfig(0.0)
    expected = greedy_tokens(pair.target)
    setup = Setup(pair, method, greedy, draft_config, 16, 3)
    run = VectorisedRun(setup, seed=3).run(500)
    assert set(run.outcomes.tolist()) == {outcome_code(pair.target, expected)}
    for seed in range(10):
        assert run_literal(setup, seed) == expected, f"seed {seed}"


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("method", METHODS, ids=[m.value for m in METHODS])
def test_per_sequence_functions_draw_as_the_batched_pipeline(pair: Pair, method: Method, case: str) -> None:
    """One generation through the per-sequence functions on full vocabularies equals a batch of one."""
    target_config, draft_config, max_support, k = CASES[case]
    setup = Setup(pair, method, target_config, draft_config, max_support, k)
    outputs = set()
    for seed in range(25):
        literal = run_literal(setup, seed)
        batched = VectorisedRun(setup, seed).run(1)
        assert outcome_code(pair.target, literal) == int(batched.outcomes[0]), f"seed {seed}"
        outputs.add(tuple(literal))
    assert len(outputs) > 5
