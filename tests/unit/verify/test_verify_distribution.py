"""Losslessness of the full speculative pipeline on toy LMs (same vocabulary).

Each test runs the drafter (``draft_tokens_batch``), the target's Score step (``score_candidates_batch``)
and the coordinator (``acceptance_uniforms`` / ``count_accepted_*`` / ``correction_tokens_batch``) round by
round until 1e5 independent generations have 3 output tokens each, and compares them with the target's
exact joint law (enumerated with a plain reference warper) by a chi-square test and a TV-distance bound.
The first round's number of accepted candidates is compared with the acceptance oracle
(sum of min(target_probs, draft_probs) along draft prefixes, per position).
"""

from __future__ import annotations

import math

import pytest
import torch

from core.sampling import SamplingConfig
from tests.unit.verify.verify_pipeline import (
    PipelineRun,
    assert_acceptance_oracle,
    assert_output_law,
    greedy_decode,
    run_literal,
    run_vectorised,
    sd_draft_one,
    sd_drafter_step,
)
from tests.unit.verify.verify_toys import (
    NUM_OUTPUT_TOKENS,
    DrafterProposal,
    ToyLM,
    first_round_accept_law,
    random_toy_lm,
)

VOCAB = 6
NUM_TRIALS = 100_000
MAX_K = 4


def toy_pair(k: int = MAX_K) -> tuple[ToyLM, ToyLM]:
    """(target, drafter): two different context-dependent toy LMs over one 6-token vocabulary."""
    positions = NUM_OUTPUT_TOKENS + k + 1
    return random_toy_lm(1, positions, VOCAB, VOCAB), random_toy_lm(2, positions, VOCAB, VOCAB)


SPECULATIVE_CASES = [
    # (target config, drafter config, max_support, k)
    (SamplingConfig(1.0), SamplingConfig(1.0), VOCAB, 3),
    (SamplingConfig(0.5), SamplingConfig(1.0), 3, 3),
    (SamplingConfig(1.5), SamplingConfig(1.5, top_k=4), 2, 3),
    (SamplingConfig(1.0, top_k=3), SamplingConfig(0.7), VOCAB, 2),
    (SamplingConfig(1.0, top_p=0.8), SamplingConfig(0.5), 4, 3),
    (SamplingConfig(1.5, top_k=4, top_p=0.9), SamplingConfig(1.0, top_p=0.7), 1, 4),
    (SamplingConfig(0.5, top_p=0.6), SamplingConfig(1.5, top_k=2, top_p=0.9), 3, 1),
]


@pytest.mark.parametrize(("target_config", "draft_config", "max_support", "k"), SPECULATIVE_CASES)
def test_speculative_output_law_and_acceptance(
    target_config: SamplingConfig, draft_config: SamplingConfig, max_support: int, k: int
) -> None:
    target, drafter = toy_pair()
    step = sd_drafter_step(drafter, draft_config, max_support)
    run = run_vectorised(target, target_config, step, k=k, num_trials=NUM_TRIALS, seed=100 + k)
    assert_output_law(run, target, target_config)
    proposal = DrafterProposal(drafter, draft_config, max_support)
    assert_acceptance_oracle(run, first_round_accept_law(target, proposal, target_config, k))


@pytest.mark.parametrize(
    ("target_config", "draft_config"),
    [
        (SamplingConfig(1.0), SamplingConfig(1.0)),
        (SamplingConfig(0.5, top_k=3), SamplingConfig(1.5, top_p=0.8)),
    ],
)
def test_exact_match_output_law(target_config: SamplingConfig, draft_config: SamplingConfig) -> None:
    target, drafter = toy_pair()
    step = sd_drafter_step(drafter, draft_config, 3)
    run = run_vectorised(target, target_config, step, k=3, num_trials=NUM_TRIALS, seed=7, exact_match=True)
    assert_output_law(run, target, target_config)


def test_uniform_drafter() -> None:
    target, drafter = toy_pair()
    uniform = ToyLM(torch.zeros_like(drafter.table))
    config = SamplingConfig(0.8, top_k=4)
    run = run_vectorised(
        target, config, sd_drafter_step(uniform, SamplingConfig(), VOCAB), k=3, num_trials=NUM_TRIALS, seed=1
    )
    assert_output_law(run, target, config)
    proposal = DrafterProposal(uniform, SamplingConfig(), VOCAB)
    assert_acceptance_oracle(run, first_round_accept_law(target, proposal, config, 3))


def test_wrong_point_mass_drafter() -> None:
    """A greedy drafter whose argmax is always token 0 (a point mass the target rarely agrees with)."""
    target, drafter = toy_pair()
    point_mass = ToyLM(drafter.table.clone())
    point_mass.table[..., 0] = 100.0
    config = SamplingConfig(1.0)
    step = sd_drafter_step(point_mass, SamplingConfig(temperature=0.0), VOCAB)
    run = run_vectorised(target, config, step, k=3, num_trials=NUM_TRIALS, seed=2)
    assert_output_law(run, target, config)
    proposal = DrafterProposal(point_mass, SamplingConfig(temperature=0.0), VOCAB)
    assert_acceptance_oracle(run, first_round_accept_law(target, proposal, config, 3))


@pytest.mark.parametrize("config", [SamplingConfig(1.0), SamplingConfig(0.7, top_k=4, top_p=0.9)])
def test_drafter_equal_to_target_accepts_everything(config: SamplingConfig) -> None:
    target, _ = toy_pair()
    step = sd_drafter_step(target, config, VOCAB)
    run = run_vectorised(target, config, step, k=1, num_trials=NUM_TRIALS, seed=3)
    assert int(run.rejections.sum()) == 0, "acceptance is exactly 1"
    assert_output_law(run, target, config)


def test_zero_overlap_drafter_is_always_rejected() -> None:
    target, drafter = toy_pair()
    target = ToyLM(target.table.clone())
    target.table[..., 3:] = -math.inf
    disjoint = ToyLM(drafter.table.clone())
    disjoint.table[..., :3] = -math.inf
    config = SamplingConfig(1.2)
    run = run_vectorised(
        target, config, sd_drafter_step(disjoint, SamplingConfig(), VOCAB), k=2, num_trials=NUM_TRIALS, seed=4
    )
    assert int(run.first_round_accepted.sum()) == 0
    assert torch.equal(run.rejections, torch.full_like(run.rejections, NUM_OUTPUT_TOKENS))
    assert_output_law(run, target, config)


@pytest.mark.parametrize(
    ("draft_config", "exact_match"),
    [
        (SamplingConfig(1.0), True),
        (SamplingConfig(0.0), True),
        (SamplingConfig(0.0), False),
        (SamplingConfig(1.5), False),
    ],
)
def test_greedy_target_equals_argmax_decoding(draft_config: SamplingConfig, exact_match: bool) -> None:
    target, drafter = toy_pair()
    step = sd_drafter_step(drafter, draft_config, 3)
    run = run_vectorised(
        target, SamplingConfig(0.0), step, k=3, num_trials=2000, seed=5, exact_match=exact_match
    )
    expected = torch.tensor(greedy_decode(target)).expand(2000, -1)
    assert torch.equal(run.outputs, expected)


def test_same_seed_same_output_different_seeds_differ() -> None:
    target, drafter = toy_pair()
    step = sd_drafter_step(drafter, SamplingConfig(), 4)
    first = run_vectorised(target, SamplingConfig(), step, k=3, num_trials=500, seed=11)
    again = run_vectorised(target, SamplingConfig(), step, k=3, num_trials=500, seed=11)
    other = run_vectorised(target, SamplingConfig(), step, k=3, num_trials=500, seed=12)
    assert torch.equal(first.outputs, again.outputs)
    assert not torch.equal(first.outputs, other.outputs)
    literal = [
        run_literal(target, SamplingConfig(), sd_draft_one(drafter, SamplingConfig(), 4), k=3, seed=s)
        for s in range(30)
    ]
    assert len({tuple(tokens) for tokens in literal}) > 1


@pytest.mark.parametrize("exact_match", [False, True])
def test_per_sequence_functions_equal_the_batched_pipeline(exact_match: bool) -> None:
    """``draft_token`` / ``score_candidates`` / ``accept_*`` / ``output_tokens`` draw as the batch forms."""
    target, drafter = toy_pair()
    target_config, draft_config = SamplingConfig(0.9, top_k=5), SamplingConfig(1.2, top_p=0.9)
    draft_one, step = sd_draft_one(drafter, draft_config, 3), sd_drafter_step(drafter, draft_config, 3)
    for seed in range(40):
        literal = run_literal(target, target_config, draft_one, k=3, seed=seed, exact_match=exact_match)
        batched = run_vectorised(
            target, target_config, step, k=3, num_trials=1, seed=seed, exact_match=exact_match
        )
        assert literal == batched.outputs[0].tolist(), f"seed {seed}"


@pytest.mark.slow
def test_per_sequence_pipeline_output_law() -> None:
    target, drafter = toy_pair()
    config = SamplingConfig(0.8)
    draft_one = sd_draft_one(drafter, SamplingConfig(1.0, top_k=3), 2)
    outputs = torch.tensor([run_literal(target, config, draft_one, k=2, seed=seed) for seed in range(600)])
    assert_output_law(PipelineRun(outputs, outputs[:, 0], outputs[:, 0], outputs[:, 0]), target, config)
