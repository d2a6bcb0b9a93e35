"""TLI's logit restriction (``core.restrict``, arXiv 2502.05202 Alg. 4): the map's checks and q / Z.

TLI's output law and acceptance run through the product's round in ``tests/unit/crossvocab``.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from core.restrict import (
    NOT_IN_INTERSECTION,
    has_intersection_mass,
    restrict_logits,
    validate_drafter_to_target,
)
from core.sampling import SamplingConfig, warp_probs
from tests.support.toy_lm import random_lm

TARGET_VOCAB = 7
DRAFTER_TO_TARGET = torch.tensor([3, -1, 0, 5, -1, 2])
INTERSECTION = [0, 2, 3, 5]  # drafter ids with a target counterpart
MASK = DRAFTER_TO_TARGET != NOT_IN_INTERSECTION


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
    restricted = restrict_logits(logits, MASK)
    assert torch.isinf(restricted[:, [1, 4]]).all()
    assert torch.equal(restricted[:, INTERSECTION], logits[:, INTERSECTION])
    assert has_intersection_mass(restricted).tolist() == [True, True]
    assert not has_intersection_mass(restrict_logits(logits, torch.zeros(6, dtype=torch.bool))).any()


@pytest.mark.parametrize("temperature", [0.6, 1.0, 1.7])
def test_restricted_proposal_is_draft_probs_over_z(temperature: float) -> None:
    """Masking before a temperature-only warp gives q / Z on the intersection, q the unrestricted law and
    Z its mass there."""
    logits = random_lm(6, len(DRAFTER_TO_TARGET)).table[2, 3]  # [7, drafter_vocab]
    config = SamplingConfig(temperature)
    draft_probs = warp_probs(logits.double(), config)
    z = (draft_probs * MASK).sum(dim=-1, keepdim=True)
    restricted = warp_probs(restrict_logits(logits.double(), MASK), config)
    torch.testing.assert_close(restricted, draft_probs * MASK / z)
