"""DISCO's stop classifier under the DSI scheduler (toy replicas, a toy drafter holding a real classifier).

A request whose plan carries a stop classifier names it in every Draft of its blocks; the drafter stops
after a token the classifier judges likely rejected and returns fewer tokens than the block asked for.
That shorter block is verified as it was drafted (the Score carries exactly the drafted tokens), and
the output stays the target's: greedy equals target-only decoding, sampled follows the target's law.
"""

from __future__ import annotations

import dataclasses

from coordinator.dsi.scheduler import DsiCommit
from coordinator.dsimodel import SchedulerKnobs
from coordinator.lookahead.disco import StopClassifierRef
from coordinator.loop.snapshot import RequestFrame
from core.modelcalls import DraftCall
from core.sampling import SamplingConfig
from tests.support.dsi_toys import DelayRule, ToyReplicaCalls, run_dsi, run_many, run_virtual
from tests.support.frames import first_snapshot, with_seed
from tests.support.laws import assert_law, exact_law, greedy_output
from tests.unit.disco.helpers import artifact_of, token_prob_classifier
from tests.unit.dsi.dsi_cases import PROMPT, SdCase, sd_case, toy_calls

CLASSIFIER_ID = "toy-stop"
BLOCK = 4
TOKENS = 16
DELAYS = DelayRule(draft_per_token=2, draft_jitter=3, score_base=2, score_jitter=10)
LAW_TRIALS = 1500
LAW_TOKENS = 4


def with_classifier(frame: RequestFrame, threshold: float) -> RequestFrame:
    """The request with DISCO's stop on its plan (as the coordinator plans disco and auto with one)."""
    plan = dataclasses.replace(frame.plan, stop_classifier=StopClassifierRef(CLASSIFIER_ID, threshold))
    return dataclasses.replace(frame, plan=plan)


def classifier_calls(case: SdCase, replicas: int, seed: int, threshold: float) -> ToyReplicaCalls:
    """Toy replicas whose drafter holds the classifier: continue while the drafted token's probability
    is above about 0.5 (``threshold`` on its continue probability)."""
    calls = toy_calls(case.target, case.drafter, replicas, DELAYS, seed)
    artifact = artifact_of(token_prob_classifier(threshold=threshold))
    assert calls.drafter is not None
    calls.drafter.stop_classifiers.register(CLASSIFIER_ID, artifact.spec_json, artifact.weights)
    return calls


def drafted_blocks(commits: list[DsiCommit]) -> list[DsiCommit]:
    return [applied for applied in commits if applied.drafted is not None]


def unclassified_length(case: SdCase, call: DraftCall) -> int:
    """How many tokens the same Draft yields without the classifier (a fresh toy drafter)."""
    plain = toy_calls(case.target, case.drafter, 1, DELAYS, 0).drafter
    assert plain is not None
    bare = dataclasses.replace(call, stop_classifier_id="", stop_classifier_threshold=0.0)
    return len(plain.draft(bare).draft_tokens)


def test_a_classifier_stop_ends_a_dsi_block_and_the_block_is_verified_as_sent() -> None:
    case = sd_case(SamplingConfig(0.0), TOKENS)
    frame = with_classifier(case.frame, threshold=0.5)
    expected = greedy_output(case.target, TOKENS, prompt=PROMPT)
    stopped = 0
    for replicas in (1, 2, 4):
        knobs = SchedulerKnobs(BLOCK, replicas + 1, plain_steps=replicas > 1)
        for seed in range(6):
            calls = classifier_calls(case, replicas, seed, threshold=0.5)
            start = first_snapshot(with_seed(frame, seed))
            output, commits, scheduler = run_virtual(run_dsi(start, calls, knobs))
            assert output == expected, "greedy output is target-only decoding"
            stopped += check_blocks(case, calls, commits)
            assert scheduler.counters.short_drafts > 0
    assert stopped > 0, "the classifier ended some blocks early"


def check_blocks(case: SdCase, calls: ToyReplicaCalls, commits: list[DsiCommit]) -> int:
    """Every Draft named the classifier; every applied block was verified exactly as drafted; returns
    how many applied blocks the classifier cut short (checked against the same Draft without it)."""
    assert calls.drafter is not None
    asked = calls.drafter.state.draft_calls
    assert asked and all(c.stop_classifier_id == CLASSIFIER_ID for c in asked), "every Draft names it"
    drafts = [r for r in calls.log.calls if r.method == "Draft"]
    assert len(drafts) == len(asked)  # the log and the drafter see the same calls, in the same order
    call_of = {id(record.result): call for record, call in zip(drafts, asked, strict=True) if record.finished}
    scores = {id(r.result): r for r in calls.log.calls if r.method == "Score" and r.finished}
    stopped = 0
    for applied in commits:
        if applied.drafted is None:
            continue  # a plain step
        tokens = tuple(applied.drafted.draft_tokens)
        assert scores[id(applied.scored)].candidates == tokens, "verified as drafted"
        assert applied.candidates == len(tokens)
        call = call_of[id(applied.drafted)]
        if len(tokens) < call.max_draft_tokens:  # no end of sequence here: only the classifier stops
            assert unclassified_length(case, call) == call.max_draft_tokens
            stopped += 1
    return stopped


def test_without_the_classifier_every_block_runs_to_its_budget() -> None:
    """The control: the same requests without a stop classifier have no short drafts, so the short
    blocks above are the classifier's."""
    case = sd_case(SamplingConfig(0.0), TOKENS)
    for seed in range(4):
        calls = toy_calls(case.target, case.drafter, 2, DELAYS, seed)
        knobs = SchedulerKnobs(BLOCK, 3, plain_steps=True)
        _, _, scheduler = run_virtual(run_dsi(first_snapshot(with_seed(case.frame, seed)), calls, knobs))
        assert calls.drafter is not None
        assert all(c.stop_classifier_id == "" for c in calls.drafter.state.draft_calls)
        assert scheduler.counters.short_drafts == 0 and scheduler.counters.draft_tokens > 0


def test_sampled_output_law_with_classifier_stops_is_the_target_law() -> None:
    sampled = SamplingConfig(1.0)
    case = sd_case(sampled, LAW_TOKENS)
    frame = with_classifier(case.frame, threshold=0.5)
    outputs, counters = run_many(
        frame,
        lambda seed: classifier_calls(case, 2, seed, threshold=0.5),
        SchedulerKnobs(3, 3, plain_steps=True),
        range(LAW_TRIALS),
    )
    assert_law(outputs, exact_law(case.target, sampled, LAW_TOKENS, prompt=PROMPT))
    assert counters.short_drafts > 0.1 * counters.rounds, "classifier stops ended blocks"
    assert 0 < counters.accepted_tokens < counters.draft_tokens
