"""Losslessness of speculative decoding (sd, one vocabulary) through the product's round, on toy LMs.

Each law test runs 1e5 requests through the round's pure functions (``tests.support.population``:
``draft_call`` -> drafter -> ``candidates`` -> ``score_call`` -> target -> ``decide`` -> ``commit``), the
toy services drafting with ``core.drafting`` (the stop rule included) and scoring with ``core.sampling``,
and compares the outputs with the target's exact law (enumerated with a plain reference warper) by a
chi-square test and a TV-distance bound. Covered: warpers (temperature, top-k, top-p) and truncated
proposals, greedy, EOS inside drafts (a stop token), low-confidence tokens inside drafts, max_new_tokens
and the target's context window inside a draft, adversarial drafters. The first round's number of
accepted candidates is compared with the acceptance oracle (sum of min(target_probs, draft_probs) along
draft prefixes). A few requests also go through ``run_round`` itself, with their own seeds.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

import numpy as np
import pytest
import torch

from coordinator.request import AlgorithmName
from core.sampling import SamplingConfig
from tests.support.frames import toy_endpoint, toy_frame
from tests.support.laws import (
    assert_law,
    chi_square_pvalue,
    exact_law,
    greedy_output,
    reference_proposal,
    reference_warp,
)
from tests.support.population import LawCase, Population, PopulationRun, run_requests
from tests.support.toy_lm import TableLM, ToyLM, random_lm
from tests.support.toy_service import DirectCalls, ToyModel, bare_info

VOCAB = 6
EOS = 5
NUM_TRIALS = 100_000
FEWER_TRIALS = 30_000  # for cases whose point is not a small deviation from the law
PROMPT = (0,)
OUTPUT_TOKENS = 4


def toy_pair() -> tuple[TableLM, TableLM]:
    """(target, drafter): two different context-dependent toy LMs over one 6-token vocabulary."""
    return random_lm(1, VOCAB), random_lm(2, VOCAB)


def sd_case(
    target: ToyLM,
    drafter: ToyLM,
    config: SamplingConfig,
    *,
    max_support: int = VOCAB,
    k: int = 3,
    max_new_tokens: int = OUTPUT_TOKENS,
    eos: Collection[int] = (),
    ignore_eos: bool = False,
    threshold: float = 0.0,
    target_window: int = 1 << 16,
) -> LawCase:
    frame = toy_frame(
        AlgorithmName.SD,
        config,
        target=toy_endpoint("target", VOCAB, eos=eos, max_context_tokens=target_window),
        drafter=toy_endpoint("drafter", VOCAB, eos=eos),
        max_new_tokens=max_new_tokens,
        max_support=max_support,
        ignore_eos=ignore_eos,
        target_prompt=PROMPT,
        drafter_prompt=PROMPT,
    )
    return LawCase(frame, target, drafter, k, threshold)


def target_law(case: LawCase, length: int | None = None) -> dict[tuple[int, ...], float]:
    frame = case.frame
    eos = () if frame.params.ignore_eos else frame.target.eos_token_ids
    length = frame.params.max_new_tokens if length is None else length
    return exact_law(case.target, frame.params.sampling, length, prompt=PROMPT, eos=eos)


def run_law(case: LawCase, seed: int, trials: int = NUM_TRIALS, length: int | None = None) -> Population:
    population = PopulationRun(case).run(trials, seed)
    assert_law(population.outputs, target_law(case, length))
    return population


def first_round_accept_law(case: LawCase) -> np.ndarray:
    """Exact law of the number of candidates accepted in the first round, [k+1], k the first round's.

    P(at least j accepted) = sum over draft prefixes x_1..x_j of prod_i min(target_probs_i, draft_probs_i)
    at x_i, both written plainly (``reference_warp``, ``reference_proposal``).
    """
    frame, drafter = case.frame, case.drafter
    assert drafter is not None
    config, k = frame.params.sampling, min(case.k, frame.params.max_new_tokens - 1)
    at_least = np.zeros(k + 2)
    at_least[0] = 1.0
    frontier: list[tuple[tuple[int, ...], float]] = [((), 1.0)]
    for j in range(1, k + 1):
        grown = []
        for prefix, weight in frontier:
            context = [*PROMPT, *prefix]
            target_probs = reference_warp(case.target.logits(context).tolist(), config)
            draft_probs = reference_proposal(drafter.logits(context).tolist(), config, frame.max_support)
            for token, overlap in enumerate(np.minimum(target_probs, draft_probs)):
                if overlap > 0:
                    grown.append(((*prefix, token), weight * overlap))
        frontier = grown
        at_least[j] = sum(weight for _, weight in frontier)
    return at_least[:-1] - at_least[1:]


def assert_acceptance_oracle(population: Population, accept_law: np.ndarray) -> None:
    """First-round accepted counts follow the oracle; each position's conditional rate within 5 sigma."""
    k = len(accept_law) - 1
    counts = np.bincount(population.first_accepted, minlength=k + 1).astype(np.float64)
    assert chi_square_pvalue(counts, accept_law) >= 1e-4, f"accepted {counts} vs oracle {accept_law}"
    reached, expected_reached = counts[::-1].cumsum()[::-1], accept_law[::-1].cumsum()[::-1]
    for position in range(1, k + 1):
        trials = reached[position - 1]
        if expected_reached[position - 1] == 0 or trials < 100:
            continue
        oracle = expected_reached[position] / expected_reached[position - 1]
        rate = reached[position] / trials
        sigma = math.sqrt(max(oracle * (1 - oracle), 1e-12) / trials)
        assert abs(rate - oracle) <= 5 * sigma + 1e-9, f"position {position}: rate {rate:.4f} vs {oracle:.4f}"


SPECULATIVE_CASES = [
    # (request's warpers, the drafter's max_support, k)
    (SamplingConfig(1.0), VOCAB, 3),
    (SamplingConfig(0.5), 3, 3),
    (SamplingConfig(1.5, top_k=4), 2, 3),
    (SamplingConfig(1.0, top_k=3), VOCAB, 2),
    (SamplingConfig(1.0, top_p=0.8), 4, 3),
    (SamplingConfig(1.5, top_k=4, top_p=0.9), 1, 3),
    (SamplingConfig(0.5, top_p=0.6), 3, 1),
]


@pytest.mark.parametrize(("config", "max_support", "k"), SPECULATIVE_CASES)
def test_speculative_output_law_and_acceptance(config: SamplingConfig, max_support: int, k: int) -> None:
    case = sd_case(*toy_pair(), config, max_support=max_support, k=k)
    population = run_law(case, seed=100 + k)
    assert_acceptance_oracle(population, first_round_accept_law(case))


def test_eos_inside_drafts_is_a_kept_stop_token() -> None:
    """EOS ends a draft (kept as its last token) and, once committed, the request."""
    case = sd_case(*toy_pair(), SamplingConfig(1.0), k=3, eos=(EOS,))
    population = run_law(case, seed=7)
    assert population.counts.short_drafts > 0.05 * population.counts.rounds, "drafts ended at EOS"
    assert sum(1 for output in population.outputs if output[-1] == EOS) > 0.2 * NUM_TRIALS


def test_ignore_eos_drafts_past_it() -> None:
    case = sd_case(*toy_pair(), SamplingConfig(0.8, top_k=5), k=3, eos=(EOS,), ignore_eos=True)
    population = run_law(case, seed=8, trials=FEWER_TRIALS)
    assert population.counts.short_drafts == 0
    assert any(EOS in output[:-1] for output in population.outputs)


def test_low_confidence_tokens_end_drafts_and_are_kept() -> None:
    case = sd_case(*toy_pair(), SamplingConfig(1.0), k=3, threshold=0.3)
    population = run_law(case, seed=9)
    assert population.counts.short_drafts > 0.2 * population.counts.rounds


@pytest.mark.parametrize("k", [1, 4])
def test_max_new_tokens_and_the_context_window_inside_a_draft(k: int) -> None:
    """k beyond what the request may still output (two tokens), or the target's window (prompt + 3)."""
    short = sd_case(*toy_pair(), SamplingConfig(1.0), k=k, max_new_tokens=2)
    population = run_law(short, seed=11, trials=FEWER_TRIALS)
    assert (population.first_candidates <= 1).all()
    window = sd_case(*toy_pair(), SamplingConfig(1.0), k=k, max_new_tokens=8, target_window=len(PROMPT) + 3)
    population = run_law(window, seed=12, trials=FEWER_TRIALS, length=3)
    assert {len(output) for output in population.outputs} == {3}


def test_uniform_drafter() -> None:
    target, drafter = toy_pair()
    uniform = TableLM(torch.zeros_like(drafter.table))
    case = sd_case(target, uniform, SamplingConfig(0.8, top_k=4), k=3)
    population = run_law(case, seed=1, trials=FEWER_TRIALS)
    assert_acceptance_oracle(population, first_round_accept_law(case))


def test_wrong_point_mass_drafter() -> None:
    """A drafter whose mass is all but entirely on token 0 (a point mass the target rarely agrees with)."""
    target, drafter = toy_pair()
    point_mass = TableLM(drafter.table.clone())
    point_mass.table[..., 0] = 100.0
    case = sd_case(target, point_mass, SamplingConfig(1.0), k=3)
    population = run_law(case, seed=2, trials=FEWER_TRIALS)
    assert_acceptance_oracle(population, first_round_accept_law(case))


@pytest.mark.parametrize("config", [SamplingConfig(1.0), SamplingConfig(0.7, top_k=4, top_p=0.9)])
def test_drafter_equal_to_target_accepts_everything(config: SamplingConfig) -> None:
    target, _ = toy_pair()
    population = run_law(sd_case(target, target, config, k=1), seed=3, trials=FEWER_TRIALS)
    assert population.counts.rejected == 0, "acceptance is exactly 1"


def test_zero_overlap_drafter_is_always_rejected() -> None:
    target, drafter = toy_pair()
    target = TableLM(target.table.clone())
    target.table[..., 3:] = -math.inf
    disjoint = TableLM(drafter.table.clone())
    disjoint.table[..., :3] = -math.inf
    population = run_law(sd_case(target, disjoint, SamplingConfig(1.2), k=2), seed=4, trials=FEWER_TRIALS)
    assert int(population.first_accepted.sum()) == 0
    assert population.counts.rounds == OUTPUT_TOKENS * FEWER_TRIALS
    assert population.counts.rejected == (OUTPUT_TOKENS - 1) * FEWER_TRIALS  # the last round drafts nothing


@pytest.mark.parametrize("k", [1, 3, 6])
def test_greedy_equals_argmax_decoding(k: int) -> None:
    target, drafter = toy_pair()
    case = sd_case(target, drafter, SamplingConfig(0.0), k=k, eos=(EOS,))
    expected = greedy_output(target, OUTPUT_TOKENS, prompt=PROMPT, eos=(EOS,))
    assert set(PopulationRun(case).run(2000, seed=5).outputs) == {expected}
    assert run_requests(case, direct_calls(case), range(5)) == [expected] * 5


def direct_calls(case: LawCase) -> DirectCalls:
    assert case.drafter is not None
    return DirectCalls(ToyModel(case.target, bare_info(VOCAB)), ToyModel(case.drafter, bare_info(VOCAB)))


def test_same_seed_same_output_different_seeds_differ() -> None:
    case = sd_case(*toy_pair(), SamplingConfig(1.0), max_support=4, k=3)
    calls = direct_calls(case)
    first, again = run_requests(case, calls, range(30)), run_requests(case, calls, range(30))
    assert first == again
    assert len(set(first)) > 10
    population = PopulationRun(case)
    assert population.run(500, seed=11).outputs == population.run(500, seed=11).outputs


@pytest.mark.slow
@pytest.mark.parametrize("eos", [(), (EOS,)], ids=["no-eos", "eos"])
def test_run_round_over_toy_services_follows_the_target_law(eos: Sequence[int]) -> None:
    """``run_round`` end to end (each request its own seeded draws) on fewer requests."""
    case = sd_case(*toy_pair(), SamplingConfig(0.8), max_support=3, k=2, eos=eos, threshold=0.2)
    outputs = run_requests(case, direct_calls(case), range(800))
    assert_law(outputs, target_law(case))
