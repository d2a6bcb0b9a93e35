"""The per-round time breakdown and the ideal speedup, on fixed numbers."""

from __future__ import annotations

import dataclasses

import pytest

from tests.unit.bench.records import record, run
from tools.bench.breakdown import ideal_speedup, round_breakdown
from tools.bench.options import BenchOptions
from tools.bench.records import Configuration, PromptRecord
from tools.bench.report import build_document, format_table, summarize

SERVICES_AR = Configuration("services", "ar", 0.0)
SERVICES_SD = Configuration("services", "sd", 0.0, "static:3")


def timed(index: int, rounds: int, seconds: float, scheduler: str = "si") -> PromptRecord:
    """``rounds`` rounds of 3 draft tokens (half accepted): drafter forwards 10 ms, target forwards
    100 ms (c = 0.1); each round's drafter calls take 50 ms and its target call 150 ms."""
    return dataclasses.replace(
        record(index, 2 * rounds, seconds),
        rounds=rounds,
        target_forwards=rounds,
        drafter_forwards=3 * rounds,
        draft_tokens=3 * rounds,
        accepted_tokens=3 * rounds // 2,
        scheduler_ran=scheduler,
        drafter_compute_seconds=0.03 * rounds,
        target_compute_seconds=0.1 * rounds,
        drafter_call_seconds=0.05 * rounds,
        target_call_seconds=0.15 * rounds,
    )


def computed(ar: PromptRecord, step: float) -> PromptRecord:
    """An ar record whose target computed ``step`` seconds a token (and whose calls took that long)."""
    compute = step * ar.output_tokens
    return dataclasses.replace(
        ar,
        rounds=ar.output_tokens,
        target_forwards=ar.output_tokens,
        drafter_forwards=0,
        draft_tokens=0,
        accepted_tokens=0,
        drafter_compute_seconds=0.0,
        target_compute_seconds=compute,
        drafter_call_seconds=0.0,
        target_call_seconds=compute,
    )


def test_the_ideal_speedup_is_sis_model_and_linear_between_draft_lengths() -> None:
    # a = 0.5, k = 3, c = 0.1: (1 - 0.5**4) / 0.5 = 1.875 tokens per round of 0.3 + 1 target forwards
    assert ideal_speedup(0.5, 3.0, 0.1) == pytest.approx(1.875 / 1.3)
    at_2 = 1.75 / 1.2  # k = 2: (1 - 0.5**3) / 0.5 tokens over 1.2 forwards
    assert ideal_speedup(0.5, 2.5, 0.1) == pytest.approx((at_2 + 1.875 / 1.3) / 2)
    assert ideal_speedup(1.0, 4.0, 0.1) == pytest.approx(5 / 1.4)  # always accepted: k + 1 tokens
    assert ideal_speedup(0.5, 0.0, 0.1) is None  # nothing drafted
    assert ideal_speedup(0.5, 3.0, 0.0) is None  # the drafter reported no compute


def test_the_breakdown_splits_a_round_into_compute_wire_and_coordinator() -> None:
    records = [timed(0, 4, 1.0), timed(1, 6, 1.5)]  # 10 rounds in 2.5 s: 250 ms per round
    breakdown = round_breakdown(records, measured_speedup=1.3)
    assert breakdown is not None and breakdown.rounds == 10 and not breakdown.overlapped
    assert breakdown.drafter_compute_seconds == pytest.approx(0.03)
    assert breakdown.target_compute_seconds == pytest.approx(0.1)
    assert breakdown.wire_seconds == pytest.approx(0.07)  # 200 ms of calls - 130 ms of compute
    assert breakdown.coordinator_seconds == pytest.approx(0.05)  # 250 ms - 200 ms of calls
    assert breakdown.drafter_cost == pytest.approx(0.1)
    assert breakdown.model_speedup == pytest.approx(1.875 / 1.3)
    assert breakdown.ideal_speedup is None and breakdown.overhead is None  # ar's step not given
    # 2 tokens a round; target-only decoding computes 200 ms a token; a round computes 130 ms
    measured = round_breakdown(records, measured_speedup=1.3, target_step=0.2)
    assert measured is not None and measured.ideal_speedup == pytest.approx(2 * 0.2 / 0.13)
    assert measured.overhead == pytest.approx(1 - 1.3 / (2 * 0.2 / 0.13))


def test_dsi_is_overlapped_and_records_without_call_times_have_no_breakdown() -> None:
    breakdown = round_breakdown([timed(0, 4, 0.5, scheduler="dsi")], measured_speedup=None)
    assert breakdown is not None and breakdown.overlapped
    assert breakdown.wire_seconds is None and breakdown.coordinator_seconds is None
    assert breakdown.target_compute_seconds == pytest.approx(0.1) and breakdown.overhead is None
    overlapped = round_breakdown([timed(0, 4, 0.5, scheduler="dsi")], measured_speedup=2.0, target_step=0.2)
    assert overlapped is not None and overlapped.ideal_speedup is None  # compute overlaps under DSI
    assert round_breakdown([record(0, 10, 1.0)], measured_speedup=2.0) is None


def test_the_table_and_document_carry_the_breakdown() -> None:
    ar = run(SERVICES_AR, (0, 8, 2.0), (1, 12, 3.0))  # 4 tokens/s, 200 ms of target compute a token
    ar = dataclasses.replace(ar, records=[computed(r, 0.2) for r in ar.records])
    sd = dataclasses.replace(run(SERVICES_SD), records=[timed(0, 4, 1.0), timed(1, 6, 1.5)])  # 8 tokens/s
    summaries = summarize([ar, sd], same_kernels=True)
    assert summaries[0].breakdown is None
    breakdown = summaries[1].breakdown
    assert breakdown is not None and breakdown.measured_speedup == pytest.approx(2.0)
    options = BenchOptions(drafter="d", target="t")
    lines = format_table(summaries, options).splitlines()
    assert "coord ms/r" in lines[0] and "overhead" in lines[0]
    assert breakdown.ideal_speedup == pytest.approx(2 * 0.2 / 0.13)  # 3.08x
    assert lines[2].split()[-6:] == ["30.0", "100.0", "70.0", "50.0", "3.08x", f"{breakdown.overhead:.0%}"]
    document = build_document(options, {}, {}, summaries, "t0", updated="t1", complete=True)
    assert document["configurations"][1]["round_breakdown"]["coordinator_seconds"] == pytest.approx(0.05)
    assert document["configurations"][0]["round_breakdown"] is None
