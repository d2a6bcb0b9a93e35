"""The round's pure functions one by one, and ``run_round``'s fallbacks (no services: toy calls)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from coordinator.loop.round import (
    Committed,
    DrafterFailedError,
    MalformedResponseError,
    Verified,
    candidates,
    commit,
    decide,
    draft_budget,
    draft_call,
    drafter_window_full,
    drafts_this_round,
    run_round,
    score_call,
)
from coordinator.loop.snapshot import DrafterView, RoundSnapshot
from coordinator.loop.translate import EMPTY, Candidates, UnusableDraftError
from coordinator.request import AlgorithmName, FinishReason
from coordinator.seeds import SeedPurpose, round_seed
from core.modelcalls import DraftCall, DraftOutcome, ForwardStats, ScoreCall, ScoreOutcome, SparseProbs
from core.sampling import SamplingConfig
from tests.support.frames import first_snapshot, toy_endpoint, toy_frame

VOCAB, EOS = 10, 9
SAMPLED = SamplingConfig(1.0)


def snapshot(
    config: SamplingConfig = SAMPLED,
    *,
    output: tuple[int, ...] = (),
    max_new_tokens: int = 8,
    target_window: int = 1 << 16,
    drafter_window: int = 1 << 16,
    ignore_eos: bool = False,
) -> RoundSnapshot:
    frame = toy_frame(
        AlgorithmName.SD,
        config,
        target=toy_endpoint("target", VOCAB, eos=(EOS,), max_context_tokens=target_window),
        drafter=toy_endpoint(
            "drafter", VOCAB, eos=(EOS,), max_context_tokens=drafter_window, max_draft_tokens=5
        ),
        max_new_tokens=max_new_tokens,
        ignore_eos=ignore_eos,
        target_prompt=(1, 2),
        drafter_prompt=(1, 2),
        seed=42,
    )
    return replace(first_snapshot(frame), output=output)


def dist(ids: list[int], probs: list[float]) -> SparseProbs:
    return SparseProbs(tuple(ids), tuple(probs))


def drafted(tokens: list[int], distributions: list[SparseProbs]) -> DraftOutcome:
    return DraftOutcome(tuple(tokens), tuple(distributions), ForwardStats())


def test_draft_call_names_the_drafter_context_and_the_round_seed() -> None:
    start = snapshot(output=(5, 6))
    call = draft_call(start, 3, 0.25)
    assert call.context.tokens == (1, 2, 5, 6) and call.context.cached_prefix_len == 0
    assert (call.max_draft_tokens, call.confidence_threshold, call.max_support) == (3, 0.25, 16)
    assert call.seed == round_seed(42, 0, SeedPurpose.DRAFT)
    assert call.stop_token_ids == {EOS} and call.token_mask_id == ""
    assert draft_call(replace(start, round_index=1), 3, 0.0).seed == round_seed(42, 1, SeedPurpose.DRAFT)
    assert draft_call(snapshot(ignore_eos=True), 3, 0.0).stop_token_ids == frozenset()


def test_draft_budget_leaves_room_for_one_more_token() -> None:
    assert draft_budget(snapshot()) == 5  # the drafter's own limit
    assert draft_budget(snapshot(output=(3,) * 5)) == 2  # 8 - 5 - 1
    assert draft_budget(snapshot(output=(3,) * 7)) == 0
    assert draft_budget(snapshot(target_window=5)) == 2  # prompt 2 + candidates + 1 <= 5
    assert draft_budget(snapshot(drafter_window=4)) == 2
    full = snapshot(drafter_window=2)
    assert drafter_window_full(full) and draft_budget(full) == 0
    assert draft_budget(replace(snapshot(), drafting=False)) == 0


def test_tli_waits_while_the_drafter_view_lacks_committed_bytes() -> None:
    start = snapshot()
    tli = replace(
        start, frame=replace(start.frame, plan=replace(start.frame.plan, algorithm=AlgorithmName.TLI))
    )
    assert drafts_this_round(replace(tli, view=DrafterView()))
    assert not drafts_this_round(replace(tli, view=DrafterView(pending=b"\xc3")))
    assert drafts_this_round(replace(start, view=DrafterView(pending=b"\xc3")))  # sd has no view anyway


def test_sd_candidates_read_the_draft_probabilities_at_the_draft_tokens() -> None:
    start = snapshot()
    outcome = drafted([3, 5], [dist([3, 4], [0.75, 0.25]), dist([1, 5], [0.5, 0.5])])
    proposed = candidates(start, draft_call(start, 2, 0.0), outcome)
    assert proposed.tokens == (3, 5) and proposed.candidate_draft_probs == (0.75, 0.5)
    assert proposed.proposals == outcome.draft_probs


def test_sd_candidates_stop_before_a_proposal_outside_the_target_vocabulary() -> None:
    # The second distribution reaches id 12 (a padding row of a wider head): cut there, even though
    # its own token is in range, because that decision must not depend on the token drawn.
    start = snapshot()
    outcome = drafted([3, 5, 6], [dist([3], [1.0]), dist([5, 12], [0.9, 0.1]), dist([6], [1.0])])
    proposed = candidates(start, draft_call(start, 3, 0.0), outcome)
    assert proposed.tokens == (3,) and proposed.proposals is not None and len(proposed.proposals) == 1


@pytest.mark.parametrize(
    "bad",
    [
        drafted([3, 4], [dist([3], [1.0])]),  # a distribution missing
        drafted([3, 4, 5, 6], [dist([i], [1.0]) for i in (3, 4, 5, 6)]),  # more than k
        drafted([3], [dist([4], [1.0])]),  # the token is not in its distribution
    ],
)
def test_unusable_drafts_are_refused(bad: DraftOutcome) -> None:
    start = snapshot()
    with pytest.raises(UnusableDraftError):
        candidates(start, draft_call(start, 3, 0.0), bad)


def test_score_call_ships_proposals_only_for_the_speculative_rule() -> None:
    proposed = Candidates((3, 5), (dist([3, 4], [0.75, 0.25]), dist([5], [1.0])), (0.75, 1.0))
    sampled = score_call(snapshot(output=(7,)), proposed)
    assert sampled.context.tokens == (1, 2, 7) and sampled.candidate_tokens == (3, 5)
    assert sampled.draft_probs == proposed.proposals and sampled.seed == round_seed(42, 0, SeedPurpose.SCORE)
    assert score_call(snapshot(SamplingConfig(0.0)), proposed).draft_probs is None  # greedy: exact match
    assert score_call(snapshot(), replace(proposed, proposals=None)).draft_probs is None  # SLEM


def scored(samples: list[int], probs: list[float] = (), recovered: list[int] = ()) -> ScoreOutcome:  # type: ignore[assignment]
    return ScoreOutcome(tuple(probs), tuple(samples), tuple(recovered), ForwardStats())


def test_decide_exact_match_and_speculative() -> None:
    proposed = Candidates((3, 5), (dist([3], [1.0]), dist([5, 6], [0.5, 0.5])), (1.0, 0.5))
    greedy = snapshot(SamplingConfig(0.0))
    assert decide(greedy, proposed, scored([3, 4, 8])) == Verified((3, 4), 1)
    assert decide(greedy, proposed, scored([3, 5, 8])) == Verified((3, 5, 8), 2)
    # Speculative: target probs of 1 accept whatever the uniforms; 0 rejects, the recovered token follows.
    assert decide(snapshot(), proposed, scored([0, 0, 8], [1.0, 1.0], [1, 2])) == Verified((3, 5, 8), 2)
    assert decide(snapshot(), proposed, scored([0, 0, 8], [1.0, 0.0], [1, 2])) == Verified((3, 2), 1)
    assert decide(snapshot(), EMPTY, scored([7])) == Verified((7,), 0)  # a plain target step


def test_decide_draws_its_uniforms_from_the_round_seed() -> None:
    proposed = Candidates((3,), (dist([3, 4], [0.5, 0.5]),), (0.5,))
    answer = scored([0, 8], [0.25], [4])  # accepted iff u < 0.5
    start = snapshot()
    first = [decide(replace(start, round_index=r), proposed, answer).accepted for r in range(64)]
    again = [decide(replace(start, round_index=r), proposed, answer).accepted for r in range(64)]
    assert first == again and 10 < sum(first) < 54


@pytest.mark.parametrize(
    "answer",
    [scored([0]), scored([0, 1, 2, 3]), scored([0, 1, 2], [0.5], [1, 2]), scored([0, 1, 2], [0.5, 0.5], [])],
)
def test_a_malformed_score_answer_fails_the_request(answer: ScoreOutcome) -> None:
    proposed = Candidates((3, 5), (dist([3], [1.0]), dist([5], [1.0])), (1.0, 1.0))
    with pytest.raises(MalformedResponseError):
        decide(snapshot(), proposed, answer)


def test_commit_stops_at_eos_max_new_tokens_and_the_window() -> None:
    assert commit(snapshot(), Verified((3, EOS, 4), 2)) == Committed((3, EOS), FinishReason.STOP)
    assert commit(snapshot(ignore_eos=True), Verified((3, EOS, 4), 2)) == Committed((3, EOS, 4), None)
    assert commit(snapshot(output=(3,) * 6), Verified((4, 5, 6), 2)) == Committed((4, 5), FinishReason.LENGTH)
    assert commit(snapshot(target_window=4), Verified((4, 5, 6), 2)) == Committed(
        (4, 5), FinishReason.CONTEXT
    )
    assert commit(snapshot(output=(3,) * 7), Verified((EOS,), 0)) == Committed((EOS,), FinishReason.STOP)


class ScriptedCalls:
    """Model calls that answer from a script (``None`` for a draft: the drafter failed)."""

    def __init__(self, draft: DraftOutcome | None, answer: ScoreOutcome) -> None:
        self.answer_draft, self.answer = draft, answer
        self.scores: list[ScoreCall] = []
        self.drafts: list[DraftCall] = []

    async def draft(self, call: DraftCall) -> DraftOutcome:
        self.drafts.append(call)
        if self.answer_draft is None:
            raise DrafterFailedError("drafter at toy is unavailable")
        return self.answer_draft

    async def score(self, call: ScoreCall) -> ScoreOutcome:
        self.scores.append(call)
        return self.answer


@pytest.mark.parametrize(
    ("draft", "reason"),
    [
        (None, "drafter at toy is unavailable"),
        (drafted([3], [dist([4], [1.0])]), "the drafter sent draft token 3 with probability 0"),
    ],
)
def test_a_failed_or_unusable_draft_makes_a_plain_target_step(
    draft: DraftOutcome | None, reason: str
) -> None:
    calls = ScriptedCalls(draft, scored([7]))
    result = asyncio.run(run_round(snapshot(), 3, 0.0, calls))
    assert result.fallback == reason and result.candidates == EMPTY
    assert calls.scores[0].candidate_tokens == () and result.committed.tokens == (7,)


def test_k_zero_is_a_plain_target_step_without_a_draft_call() -> None:
    calls = ScriptedCalls(drafted([3], [dist([3], [1.0])]), scored([7]))
    result = asyncio.run(run_round(snapshot(), 0, 0.0, calls))
    assert not calls.drafts and result.drafted is None and result.verified == Verified((7,), 0)


def test_an_empty_draft_is_a_plain_target_step() -> None:
    """A lookup drafter without a match drafts nothing: no candidates, no proposals, one target token."""
    start = snapshot()
    call = draft_call(start, 3, 0.0)
    assert candidates(start, call, drafted([], [])) is EMPTY
    score = score_call(start, EMPTY)
    assert score.candidate_tokens == () and score.draft_probs is None

    class Calls:
        async def draft(self, call: DraftCall) -> DraftOutcome:
            return drafted([], [])

        async def score(self, call: ScoreCall) -> ScoreOutcome:
            assert call.candidate_tokens == () and call.draft_probs is None
            return ScoreOutcome((), (4,), (), ForwardStats(forwards=1, computed_tokens=1))

    result = asyncio.run(run_round(start, 3, 0.0, Calls()))
    assert result.verified == Verified((4,), 0) and result.committed.tokens == (4,)
    assert result.drafted is not None and not result.fallback
