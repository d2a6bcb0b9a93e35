"""Checks of a drafter's answer before verification (pure)."""

from __future__ import annotations

import pytest

from coordinator.loop.rounds import MalformedResponseError, usable_draft
from core.modelcalls import DraftOutcome, ForwardStats, SparseProbs


def dist(ids: list[int], probs: list[float]) -> SparseProbs:
    return SparseProbs(tuple(ids), tuple(probs))


def response(tokens: list[int], distributions: list[SparseProbs]) -> DraftOutcome:
    return DraftOutcome(tuple(tokens), tuple(distributions), ForwardStats())


def test_draft_probabilities_are_read_at_the_draft_tokens() -> None:
    drafted = usable_draft(
        response([3, 5], [dist([3, 4], [0.75, 0.25]), dist([1, 5], [0.5, 0.5])]), k=2, target_vocab_size=10
    )
    assert drafted.tokens == (3, 5)
    assert drafted.candidate_draft_probs == (0.75, 0.5)


def test_cut_before_a_distribution_outside_the_target_vocabulary() -> None:
    # The second distribution reaches id 12 (a padding row of a wider head): cut there, even though
    # its own token is in range, because that decision must not depend on the token drawn.
    drafted = usable_draft(
        response([3, 5, 6], [dist([3], [1.0]), dist([5, 12], [0.9, 0.1]), dist([6], [1.0])]),
        k=3,
        target_vocab_size=10,
    )
    assert drafted.tokens == (3,) and drafted.distributions is not None and len(drafted.distributions) == 1


@pytest.mark.parametrize(
    "bad",
    [
        response([3, 4], [dist([3], [1.0])]),  # a distribution missing
        response([3, 4, 5, 6], [dist([i], [1.0]) for i in (3, 4, 5, 6)]),  # more than k
        response([3], [dist([4], [1.0])]),  # the token is not in its distribution
    ],
)
def test_malformed_drafts_are_refused(bad: DraftOutcome) -> None:
    with pytest.raises(MalformedResponseError):
        usable_draft(bad, k=3, target_vocab_size=10)
