"""Near-ties: greedy output positions decided by a top-2 logit margin under the tolerance are recorded."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

from coordinator.loop.round import Committed, near_tie_offsets
from coordinator.loop.state import near_tie_margin
from coordinator.request import AlgorithmName
from core.modelcalls import ForwardStats, ScoreOutcome
from core.sampling import SamplingConfig
from tests.support.frames import first_snapshot, toy_endpoint, toy_frame
from tests.support.greedy import assert_greedy_identical, first_difference

GREEDY = SamplingConfig(temperature=0.0)


def snapshot(sampling: SamplingConfig, margin: float) -> object:
    frame = toy_frame(
        AlgorithmName.SD, sampling, target=toy_endpoint("target", 8), drafter=None, max_new_tokens=8
    )
    return first_snapshot(replace(frame, near_tie_logit_margin=margin))


def scored(margins: tuple[float, ...]) -> ScoreOutcome:
    return ScoreOutcome((), tuple(range(len(margins))), (), ForwardStats(), top2_logit_margins=margins)


def test_committed_tokens_under_the_margin_are_near_ties() -> None:
    greedy = snapshot(GREEDY, 0.01)
    margins = (0.5, 0.001, 0.2, 0.0)
    assert near_tie_offsets(greedy, scored(margins), Committed((1, 2, 3), None)) == (1,)  # type: ignore[arg-type]
    # positions beyond the committed tokens (cut by EOS or max_new_tokens) are not output
    assert near_tie_offsets(greedy, scored(margins), Committed((1,), None)) == ()  # type: ignore[arg-type]
    assert near_tie_offsets(greedy, scored(margins), Committed((1, 2, 3, 4), None)) == (1, 3)  # type: ignore[arg-type]


def test_sampled_requests_and_missing_margins_record_nothing() -> None:
    sampled = snapshot(SamplingConfig(temperature=1.0), 0.01)
    assert near_tie_offsets(sampled, scored((0.0, 0.0)), Committed((1, 2), None)) == ()  # type: ignore[arg-type]
    greedy = snapshot(GREEDY, 0.01)
    assert near_tie_offsets(greedy, scored(()), Committed((1,), None)) == ()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("configured", "dtype", "expected"),
    [
        (None, "float32", 0.01),
        (None, "bfloat16", 0.5),
        (None, "torch.float16", 0.25),
        (None, "int8", 0.01),
        (0.3, "float32", 0.3),
    ],
)
def test_the_margin_follows_the_targets_precision_unless_configured(
    configured: float | None, dtype: str, expected: float
) -> None:
    assert near_tie_margin(configured, dtype) == expected


def result(tokens: list[int], ties: tuple[int, ...] = ()) -> SimpleNamespace:
    return SimpleNamespace(token_ids=tokens, stats=SimpleNamespace(near_tie_positions=ties))


def test_greedy_identity_allows_a_difference_only_at_a_recorded_near_tie() -> None:
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([1, 2], [1, 2, 3]) == 2
    assert assert_greedy_identical(result([1, 2, 3]), result([1, 2, 3]))
    assert not assert_greedy_identical(result([1, 5, 9]), result([1, 2, 3], ties=(1,)))
    assert not assert_greedy_identical(result([1, 5, 9], ties=(1,)), result([1, 2, 3]))
    with pytest.raises(AssertionError, match="no recorded near-tie"):
        assert_greedy_identical(result([1, 5, 9], ties=(2,)), result([1, 2, 3]))


def test_margins_cross_the_wire_both_ways() -> None:
    from coordinator import wire as coordinator_wire
    from services.model import wire as service_wire

    outcome = ScoreOutcome((0.5,), (3, 4), (2,), ForwardStats(forwards=1), top2_logit_margins=(0.25, 0.0))
    assert coordinator_wire.score_outcome(service_wire.score_response(outcome)) == outcome
