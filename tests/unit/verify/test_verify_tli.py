"""TLI (token-level intersection, arXiv 2502.05202 Alg. 4): helpers, exact output law and acceptance oracle.

Two toy vocabularies overlap partially: the target has 7 tokens, the drafter 6, of which 4 map (in a
shuffled order) to target tokens. After target token 0 the drafter puts no mass on the intersection,
so a position after a drafted 0 falls back to target sampling.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from torch import Tensor

from core.restrict import (
    NOT_IN_INTERSECTION,
    draft_token_tli,
    has_intersection_mass,
    intersection_mask,
    intersection_mass,
    map_sparse_to_target,
    restrict_logits,
    target_intersection_mask,
    validate_drafter_to_target,
)
from core.sampling import SamplingConfig, warp_probs
from tests.unit.verify.verify_pipeline import (
    PipelineRun,
    assert_acceptance_oracle,
    assert_output_law,
    greedy_decode,
    run_literal,
    run_vectorised,
    tli_draft_one,
    tli_drafter_step,
)
from tests.unit.verify.verify_toys import (
    NUM_OUTPUT_TOKENS,
    ToyLM,
    first_round_accept_law,
    random_toy_lm,
    reference_proposal,
)

TARGET_VOCAB = 7
DRAFTER_TO_TARGET = torch.tensor([3, -1, 0, 5, -1, 2])
INTERSECTION = [0, 2, 3, 5]  # drafter ids with a target counterpart
NO_MASS_AFTER = (
    0  # target token (in the intersection) after which the drafter has no mass on the intersection
)
NUM_TRIALS = 100_000
MAX_K = 3


def tli_pair() -> tuple[ToyLM, ToyLM]:
    positions = NUM_OUTPUT_TOKENS + MAX_K + 1
    target = random_toy_lm(5, positions, TARGET_VOCAB, TARGET_VOCAB)
    drafter = random_toy_lm(6, positions, TARGET_VOCAB, len(DRAFTER_TO_TARGET))
    drafter.table[:, :, NO_MASS_AFTER, INTERSECTION] = -math.inf
    return target, drafter


class TliProposal:
    """The drafter's restricted proposal in target ids, written plainly (None when Z = 0)."""

    def __init__(
        self, drafter: ToyLM, drafter_to_target: Tensor, config: SamplingConfig, max_support: int
    ) -> None:
        self.drafter, self.mapping, self.config, self.max_support = (
            drafter,
            drafter_to_target.tolist(),
            config,
            max_support,
        )

    def __call__(self, context: Sequence[int]) -> np.ndarray | None:
        logits = self.drafter.logits_after(context).tolist()
        restricted = [
            x if target_id >= 0 else -math.inf for x, target_id in zip(logits, self.mapping, strict=True)
        ]
        if not any(math.isfinite(x) for x in restricted):
            return None
        in_drafter_ids = reference_proposal(restricted, self.config, self.max_support)
        in_target_ids = np.zeros(TARGET_VOCAB)
        for drafter_id, prob in enumerate(in_drafter_ids):
            if prob > 0:
                in_target_ids[self.mapping[drafter_id]] += prob
        return in_target_ids


def test_intersection_masks() -> None:
    assert intersection_mask(DRAFTER_TO_TARGET, 8).tolist() == [
        True,
        False,
        True,
        True,
        False,
        True,
        False,
        False,
    ]
    assert intersection_mask(DRAFTER_TO_TARGET, 4).tolist() == [True, False, True, True]
    assert target_intersection_mask(DRAFTER_TO_TARGET, TARGET_VOCAB).tolist() == [
        True, False, True, True, False, True, False,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("mapping", "reason"),
    [
        (torch.tensor([0, 1, 1]), "injective"),
        (torch.tensor([0, 7]), r"\[0, 7\)"),
        (torch.tensor([0, -2]), r"\[0, 7\)"),
        (torch.tensor([[0, 1]]), "1-D"),
        (torch.tensor([0.0, 1.0]), "integers"),
    ],
)
def test_validate_drafter_to_target(mapping: Tensor, reason: str) -> None:
    with pytest.raises(ValueError, match=rf"^drafter_to_target: .*{reason}"):
        validate_drafter_to_target(mapping, TARGET_VOCAB)


def test_validate_accepts_the_toy_map() -> None:
    validate_drafter_to_target(DRAFTER_TO_TARGET, TARGET_VOCAB)
    validate_drafter_to_target(torch.full((4,), NOT_IN_INTERSECTION), TARGET_VOCAB)


def test_restrict_and_mass() -> None:
    logits = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [0.0] * 6])
    restricted = restrict_logits(logits, intersection_mask(DRAFTER_TO_TARGET, 6))
    assert torch.isinf(restricted[:, [1, 4]]).all() and torch.equal(
        restricted[:, INTERSECTION], logits[:, INTERSECTION]
    )
    assert has_intersection_mass(restricted).tolist() == [True, True]
    assert not has_intersection_mass(restrict_logits(logits, torch.zeros(6, dtype=torch.bool))).any()
    mass = intersection_mass(torch.softmax(logits, -1), intersection_mask(DRAFTER_TO_TARGET, 6))
    torch.testing.assert_close(mass[1], torch.tensor(4 / 6))


def test_map_sparse_to_target() -> None:
    ids, probs = map_sparse_to_target(
        torch.tensor([3, 0, 1]), torch.tensor([0.7, 0.3, 0.0]), DRAFTER_TO_TARGET
    )
    assert ids.tolist() == [5, 3, NOT_IN_INTERSECTION] and probs.tolist() == pytest.approx([0.7, 0.3, 0.0])
    with pytest.raises(ValueError, match=r"^support_ids: "):
        map_sparse_to_target(torch.tensor([3, 1]), torch.tensor([0.7, 0.3]), DRAFTER_TO_TARGET)


@pytest.mark.parametrize("config", [SamplingConfig(), SamplingConfig(0.0), SamplingConfig(0.5, top_k=2)])
def test_draft_token_tli_in_target_ids(config: SamplingConfig) -> None:
    logits = torch.tensor([0.5, 9.0, 1.0, 2.0, 9.0, -1.0])
    result = draft_token_tli(logits, DRAFTER_TO_TARGET, config, 3, torch.Generator().manual_seed(1))
    assert result is not None
    assert result.drafter_token in INTERSECTION
    assert result.drafted.token == DRAFTER_TO_TARGET[result.drafter_token].item()
    assert set(result.drafted.support_ids.tolist()) <= {0, 2, 3, 5}
    assert result.drafted.token in result.drafted.support_ids.tolist()
    assert result.drafted.support_probs.sum().item() == pytest.approx(1.0)
    if config.is_greedy:
        assert result.drafter_token == 3 and result.drafted.token == 5
        assert result.drafted.support_probs.tolist() == [1.0]


def test_draft_token_tli_falls_back_without_intersection_mass() -> None:
    logits = torch.tensor([-math.inf, 1.0, -math.inf, -math.inf, 2.0, -math.inf])
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()
    assert draft_token_tli(logits, DRAFTER_TO_TARGET, SamplingConfig(), 4, generator) is None
    assert draft_token_tli(torch.zeros(6), torch.full((6,), -1), SamplingConfig(), 4, generator) is None
    assert torch.equal(generator.get_state(), state), "a fallback draws nothing"


@pytest.mark.parametrize("temperature", [0.6, 1.0, 1.7])
def test_restricted_proposal_is_draft_probs_over_z(temperature: float) -> None:
    """Masking before a temperature-only warp gives q / Z on the intersection, q the unrestricted law."""
    _, drafter = tli_pair()
    config = SamplingConfig(temperature)
    mask = intersection_mask(DRAFTER_TO_TARGET, len(DRAFTER_TO_TARGET))
    rows_with_mass = [token for token in range(TARGET_VOCAB + 1) if token != NO_MASS_AFTER]
    logits = drafter.table[2, 3, rows_with_mass]  # [7, drafter_vocab]
    draft_probs = warp_probs(logits.double(), config)
    z = intersection_mass(draft_probs, mask)
    restricted = warp_probs(restrict_logits(logits.double(), mask), config)
    torch.testing.assert_close(restricted, draft_probs * mask / z.unsqueeze(-1))


TLI_CASES = [
    # (target config, drafter config, max_support, k)
    (SamplingConfig(1.0), SamplingConfig(1.0), 6, 3),
    (SamplingConfig(0.7, top_k=4), SamplingConfig(1.3, top_k=3), 2, 2),
    (SamplingConfig(1.2, top_p=0.85), SamplingConfig(0.8, top_p=0.9), 3, 3),
]


@pytest.mark.parametrize(("target_config", "draft_config", "max_support", "k"), TLI_CASES)
def test_tli_output_law_and_acceptance(
    target_config: SamplingConfig, draft_config: SamplingConfig, max_support: int, k: int
) -> None:
    target, drafter = tli_pair()
    step = tli_drafter_step(drafter, DRAFTER_TO_TARGET, draft_config, max_support, TARGET_VOCAB)
    run = run_vectorised(target, target_config, step, k=k, num_trials=NUM_TRIALS, seed=20 + k)
    assert_output_law(run, target, target_config)
    proposal = TliProposal(drafter, DRAFTER_TO_TARGET, draft_config, max_support)
    assert_acceptance_oracle(run, first_round_accept_law(target, proposal, target_config, k))
    assert 0 < int(run.first_round_accepted.sum()) < k * NUM_TRIALS


def test_tli_fallback_positions_propose_nothing() -> None:
    target, drafter = tli_pair()
    step = tli_drafter_step(drafter, DRAFTER_TO_TARGET, SamplingConfig(), 6, TARGET_VOCAB)
    run = run_vectorised(target, SamplingConfig(), step, k=3, num_trials=20_000, seed=9)
    first_draft = run.first_round_drafts > 0
    assert first_draft.all(), "the empty context has intersection mass"
    short = run.first_round_drafts < 3
    assert short.any(), "some rounds stopped drafting at a fallback position"


def test_disjoint_vocabularies_fall_back_to_target_sampling() -> None:
    target, drafter = tli_pair()
    disjoint = torch.full_like(DRAFTER_TO_TARGET, NOT_IN_INTERSECTION)
    config = SamplingConfig(0.9, top_k=5)
    step = tli_drafter_step(drafter, disjoint, SamplingConfig(), 6, TARGET_VOCAB)
    run = run_vectorised(target, config, step, k=3, num_trials=NUM_TRIALS, seed=10)
    assert int(run.first_round_drafts.sum()) == 0
    assert_output_law(run, target, config)


def test_tli_greedy_equals_target_argmax_decoding() -> None:
    target, drafter = tli_pair()
    step = tli_drafter_step(drafter, DRAFTER_TO_TARGET, SamplingConfig(0.0), 6, TARGET_VOCAB)
    run = run_vectorised(target, SamplingConfig(0.0), step, k=3, num_trials=500, seed=11)
    assert torch.equal(run.outputs, torch.tensor(greedy_decode(target)).expand(500, -1))
    literal = run_literal(
        target,
        SamplingConfig(0.0),
        tli_draft_one(drafter, DRAFTER_TO_TARGET, SamplingConfig(0.0), 6),
        k=3,
        seed=0,
    )
    assert literal == greedy_decode(target)


@pytest.mark.slow
def test_tli_per_sequence_pipeline_output_law() -> None:
    target, drafter = tli_pair()
    config = SamplingConfig(1.0)
    draft_one = tli_draft_one(drafter, DRAFTER_TO_TARGET, SamplingConfig(1.0, top_k=4), 3)
    outputs = torch.tensor([run_literal(target, config, draft_one, k=2, seed=seed) for seed in range(600)])
    assert_output_law(PipelineRun(outputs, outputs[:, 0], outputs[:, 0], outputs[:, 0]), target, config)
