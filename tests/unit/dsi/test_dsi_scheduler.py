"""The DSI scheduler over in-process toy replicas under seeded random delays (on a virtual clock).

Checked: the output law is the target's (sd, sampled, 1, 2 and 4 replicas, random delays: 100,000 trials
each through cached toy models and 1,500 through the torch toy models; a delay schedule where short drafts
finish early, confidence stops with a drafter cost per drafted token: 20,000 and 1,500 trials);
greedy output is the target's argmax sequence for every replica count, knobs and timing; the
invariants of the chain (nothing committed unverified, no result on a stale prefix, every pre-empted
call cancelled or discarded, position order, one call per replica at a time); a drafter that is down
and a replica that fails.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from coordinator.dsimodel import SchedulerKnobs
from core.sampling import SamplingConfig
from tests.support.dsi_toys import DelayRule, ToyReplicaCalls, run_dsi, run_many, run_virtual
from tests.support.frames import first_snapshot, with_seed
from tests.support.laws import assert_law, exact_law, greedy_output
from tests.unit.dsi.dsi_cases import PROMPT, SdCase, sd_case, toy_calls

# Trials per law test: through the cached toy models (tests.support.law_toys, the same laws as the torch
# toys; 0.3-0.5 ms of CPU a request for 1-4 replicas, delays on a virtual clock: 30-50 s a test), and
# through the torch toy models (the production model-call path, about 1-1.6 ms a request).
LAW_TRIALS = 100_000
TRAP_TRIALS = 20_000
TORCH_LAW_TRIALS = 1_500
LAW_TOKENS = 4
SAMPLED = SamplingConfig(1.0)
RANDOM_DELAYS = DelayRule(draft_per_token=2, draft_jitter=3, score_base=2, score_jitter=10)
# Short drafts finish early (cost per drafted token, slow verifications): the schedule under which a rule
# keyed on when a draft *finished* would let the drafter's own draws choose which draw decides.
FINISH_TRAP = DelayRule(draft_per_token=4, draft_jitter=0, score_base=5, score_jitter=2)


def knobs_for(replicas: int, block_size: int = 2) -> SchedulerKnobs:
    return SchedulerKnobs(block_size, replicas + 1, plain_steps=replicas > 1)


def calls_for(
    case: SdCase, replicas: int, delays: DelayRule, cached: bool
) -> Callable[[int], ToyReplicaCalls]:
    if cached:
        return lambda seed: case.cached_calls(replicas, delays, seed)
    return lambda seed: toy_calls(case.target, case.drafter, replicas, delays, seed)


@pytest.mark.parametrize(
    ("replicas", "cached", "trials"),
    [
        *((r, True, LAW_TRIALS) for r in (1, 2, 4)),
        *((r, False, TORCH_LAW_TRIALS) for r in (1, 2, 4)),
    ],
)
def test_sd_output_law_is_the_target_law(replicas: int, cached: bool, trials: int) -> None:
    case = sd_case(SAMPLED, LAW_TOKENS)
    outputs, counters = run_many(
        case.frame, calls_for(case, replicas, RANDOM_DELAYS, cached), knobs_for(replicas), range(trials)
    )
    assert_law(outputs, exact_law(case.target, SAMPLED, LAW_TOKENS, prompt=PROMPT))
    assert 0 < counters.accepted_tokens < counters.draft_tokens, "acceptances and rejections both happen"
    if replicas > 1:
        assert counters.plain_steps > 0 and counters.bonus_discarded > 0
        assert counters.verifications_preempted > 0


@pytest.mark.parametrize(("cached", "trials"), [(True, TRAP_TRIALS), (False, TORCH_LAW_TRIALS)])
def test_sd_law_when_short_drafts_finish_early(cached: bool, trials: int) -> None:
    """Confidence stops end drafts early and a drafted token costs time: which draw decides a position
    still depends only on when drafts started, so the law holds."""
    case = sd_case(SAMPLED, LAW_TOKENS)
    outputs, counters = run_many(
        case.frame,
        calls_for(case, 2, FINISH_TRAP, cached),
        SchedulerKnobs(3, 3, plain_steps=True),
        range(trials),
        threshold=0.5,
    )
    assert_law(outputs, exact_law(case.target, SAMPLED, LAW_TOKENS, prompt=PROMPT))
    assert counters.short_drafts > 0.1 * counters.rounds, "confidence stops ended drafts"
    assert counters.bonus_discarded > 0 and counters.plain_steps > 0
    assert counters.verifications_preempted > 0 and counters.drafts_preempted > 0


@pytest.mark.parametrize("replicas", [1, 2, 4])
def test_greedy_output_is_the_argmax_sequence_for_any_timing(replicas: int) -> None:
    tokens = 12
    case = sd_case(SamplingConfig(0.0), tokens)
    expected = greedy_output(case.target, tokens, prompt=PROMPT)
    for block_size, plain in ((1, True), (3, False), (4, True)):
        knobs = SchedulerKnobs(block_size, replicas + 1, plain_steps=plain)
        outputs, _ = run_many(
            case.frame,
            lambda seed: toy_calls(case.target, case.drafter, replicas, RANDOM_DELAYS, seed),
            knobs,
            range(12),
        )
        assert set(outputs) == {expected}


def test_chain_invariants_under_random_delays() -> None:
    tokens = 10
    case = sd_case(SAMPLED, tokens)
    for seed in range(30):
        calls = toy_calls(case.target, case.drafter, 4, RANDOM_DELAYS, seed)
        start = first_snapshot(with_seed(case.frame, seed))
        output, commits, scheduler = run_virtual(run_dsi(start, calls, knobs_for(4, 2)))
        assert len(output) == tokens
        scores = [r for r in calls.log.calls if r.method == "Score"]
        position = 0
        used: set[int] = set()
        for applied in commits:
            (record,) = [r for r in scores if r.result is applied.scored]  # a finished, verified call
            assert record.finished and not record.cancelled
            used.add(id(record))
            # Its context is the committed prefix up to where the call started (never a stale one) ...
            context = record.context[len(PROMPT) :]
            assert context == output[: len(context)] and len(context) <= position
            # ... and what it committed follows the candidates it verified, in position order.
            assert output[len(context) : position] == record.candidates[: position - len(context)]
            position += len(applied.committed.tokens)
        assert position == tokens
        unused = [r for r in scores if id(r) not in used]
        assert len(unused) == scheduler.counters.verifications_preempted
        assert all(r.cancelled or r.finished for r in unused)
        assert not any(calls.log.running.values()), "every pre-empted call ended"
        assert max(calls.log.most_at_once.values()) == 1, "one call per replica at a time"
        drafts = [r for r in calls.log.calls if r.method == "Draft"]
        assert sum(r.cancelled for r in drafts) <= scheduler.counters.drafts_preempted


def test_drafter_down_decodes_target_only() -> None:
    tokens = 8
    case = sd_case(SamplingConfig(0.0), tokens)
    calls = toy_calls(case.target, case.drafter, 2, RANDOM_DELAYS, 0)
    calls.drafter_down = True
    output, _, scheduler = run_virtual(run_dsi(first_snapshot(case.frame), calls, knobs_for(2)))
    assert output == greedy_output(case.target, tokens, prompt=PROMPT)
    assert not scheduler.drafting and scheduler.counters.plain_steps == tokens


def test_a_failed_replica_is_avoided() -> None:
    tokens = 8
    case = sd_case(SamplingConfig(0.0), tokens)
    calls = toy_calls(case.target, case.drafter, 3, RANDOM_DELAYS, 1)
    calls.failing.add("r1")
    output, _, _ = run_virtual(run_dsi(first_snapshot(case.frame), calls, knobs_for(3)))
    assert output == greedy_output(case.target, tokens, prompt=PROMPT)
    assert "r1" not in {r.replica for r in calls.log.calls}


def test_a_seeded_request_is_reproducible_under_the_same_timing() -> None:
    case = sd_case(SAMPLED, 6)
    start = first_snapshot(with_seed(case.frame, 7))

    def once() -> tuple[int, ...]:
        calls = toy_calls(case.target, case.drafter, 2, RANDOM_DELAYS, 5)
        return run_virtual(run_dsi(start, calls, knobs_for(2)))[0]

    assert once() == once()
