"""The scheduler choice (``coordinator.dsi.policy``) and the chain's pure decisions (``.chain``)."""

from __future__ import annotations

import dataclasses

import pytest

from coordinator.dsi.chain import DraftedBlock, block_commit, decide_from, usable_offset
from coordinator.dsi.policy import DsiPolicy, MeasuredCosts, default_knobs, measured_costs
from coordinator.lookahead import CostEstimates, RoundObservation
from coordinator.loop.round import candidates, decide, draft_call, score_call
from coordinator.request import SchedulerName
from core.modelcalls import ScoreOutcome
from core.sampling import SamplingConfig
from tests.support.frames import first_snapshot, with_seed
from tests.support.toy_service import ToyModel, bare_info
from tests.unit.dsi.dsi_cases import sd_case

DSI, SI, AUTO = SchedulerName.DSI, SchedulerName.SI, SchedulerName.AUTO
# The published settings: a plain step helps at c = 0.5, a = 0.3; DSI pays at c = 0.13, a = 0.75.
SLOW_DRAFTER = MeasuredCosts(drafter_cost=0.5, acceptance=0.3)
GOOD_DRAFTER = MeasuredCosts(drafter_cost=0.13, acceptance=0.75)


def choose(
    asked: SchedulerName, replicas: int, costs: MeasuredCosts | None, others: int = 0
) -> SchedulerName:
    choice = DsiPolicy().choose(asked, replicas=replicas, drafting=True, costs=costs, other_requests=others)
    return choice.scheduler


def test_auto_runs_dsi_only_where_it_pays() -> None:
    assert choose(AUTO, 4, GOOD_DRAFTER) is DSI
    assert choose(AUTO, 1, GOOD_DRAFTER) is SI, "one replica"
    assert choose(AUTO, 4, None) is SI, "nothing measured yet"
    assert choose(AUTO, 4, GOOD_DRAFTER, others=3) is SI, "a loaded service"
    assert choose(SI, 4, GOOD_DRAFTER) is SI
    assert choose(DSI, 2, None) is DSI, "asked for explicitly"
    assert choose(DSI, 2, SLOW_DRAFTER) is DSI, "asked for: DSI, with the model's knobs"
    assert choose(DSI, 1, GOOD_DRAFTER) is SI, "one replica: DSI over one replica runs SI"
    not_drafting = DsiPolicy().choose(DSI, replicas=4, drafting=False, costs=GOOD_DRAFTER, other_requests=0)
    assert not_drafting.scheduler is SI


def test_knobs_come_from_the_model() -> None:
    policy = DsiPolicy()
    _, slow = policy.model_choice(SLOW_DRAFTER, 4)
    assert slow.plain_steps, "a slow drafter at low acceptance: plain target steps pay"
    _, good = policy.model_choice(GOOD_DRAFTER, 4)
    assert good.depth >= 2
    assert policy.model_choice(GOOD_DRAFTER, 4) == (_, good)  # cached
    assert default_knobs(3) == dataclasses.replace(default_knobs(3), plain_steps=False)


def test_measured_costs_need_both_timings_and_acceptance() -> None:
    estimates = CostEstimates()
    assert measured_costs(estimates, "sd:sampled") is None
    for _ in range(4):
        estimates.observe(RoundObservation(0, 0, 0.0, 0, 0, 0.1, 1, 0.1, 0))  # target-only: 0.1 s a token
        estimates.observe(RoundObservation(3, 2, 0.03, 3, 3, 0.1, 4, 0.14, 3), "sd:sampled")
    costs = measured_costs(estimates, "sd:sampled")
    assert costs is not None and costs.drafter_cost == pytest.approx(0.1, rel=0.3)
    assert 0.3 < costs.acceptance < 0.9


def block_and_score(seed: int) -> tuple[DraftedBlock, ScoreOutcome]:
    case = sd_case(SamplingConfig(1.0), 6)
    snapshot = first_snapshot(with_seed(case.frame, seed))
    drafter = ToyModel(case.drafter, bare_info(case.drafter.vocab_size))
    target = ToyModel(case.target, bare_info(case.target.vocab_size))
    call = draft_call(snapshot, 3, 0.0)
    drafted = drafter.draft(call)
    proposed = candidates(snapshot, call, drafted)
    return DraftedBlock(snapshot, drafted, proposed), target.score(score_call(snapshot, proposed))


def test_decide_from_offset_zero_is_decide_and_later_offsets_use_later_draws() -> None:
    for seed in range(20):
        block, scored = block_and_score(seed)
        whole = decide(block.snapshot, block.candidates, scored)
        assert decide_from(block.snapshot, block.candidates, scored, 0) == whole
        if whole.accepted >= 1:  # position 0 accepted: deciding from 1 on repeats the rest of the decision
            later = decide_from(block.snapshot, block.candidates, scored, 1)
            assert later.output == whole.output[1:] and later.accepted == whole.accepted - 1


def test_usable_offset_and_stale_blocks() -> None:
    block, scored = block_and_score(3)
    tokens = block.candidates.tokens
    assert usable_offset(block, ()) == 0
    assert usable_offset(block, (tokens[0],)) == 1
    other = (tokens[0] + 1) % 3
    assert usable_offset(block, (other,)) is None, "a plain step's token differs from the first candidate"
    assert block_commit(block, scored, (other,), next_started=False) is None


def test_a_full_block_keeps_its_bonus_only_when_no_next_block_started() -> None:
    for seed in range(40):
        block, scored = block_and_score(seed)
        alone = block_commit(block, scored, (), next_started=False)
        chained = block_commit(block, scored, (), next_started=True)
        assert alone is not None and chained is not None
        k = len(block.candidates.tokens)
        if alone.verified.accepted == k:
            assert alone.committed.tokens[:k] == chained.committed.tokens == block.candidates.tokens
            assert len(alone.committed.tokens) == k + 1 and chained.continues and chained.bonus_discarded
        else:
            assert alone.committed == chained.committed and not chained.continues
