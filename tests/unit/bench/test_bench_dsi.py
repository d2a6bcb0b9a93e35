"""The DSI benchmark's pure side: overrun rejection, decode speed, the model's prediction, rows, table."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from pydantic import ValidationError

from coordinator.dsimodel import choose_schedule
from coordinator.dsimodel.offline import si_latency
from tools.bench import cli as bench_cli
from tools.bench.breakdown import RoundTotals
from tools.bench.dsi_report import (
    OVERRUN_LIMIT,
    DsiRecord,
    ForwardCount,
    Mode,
    build_row,
    decode_tokens_per_second,
    format_dsi_table,
    overrun_share,
    predict,
    rejected,
    tokens_per_second,
)
from tools.bench.options import BenchOptions


def record(mode: Mode, prompt: int = 0, **fields: object) -> DsiRecord:
    values: dict[str, object] = {
        "replicas": 2,
        "mode": mode,
        "prompt_index": prompt,
        "output_tokens": 11,
        "total_seconds": 2.5,
        "time_to_first_token_seconds": 0.5,
        "draft_tokens": 8,
        "accepted_tokens": 6,
        "scheduler_ran": "si" if mode == "target-only" else mode,
        "target_replicas_used": 2 if mode == "dsi" else 1,
        "verifications_preempted": 1 if mode == "dsi" else 0,
        "target_tokens_per_output_token": 2.0,
        "token_ids": (1, 2, 3),
    }
    values.update(fields)
    return DsiRecord(**values)  # type: ignore[arg-type]


def test_overrun_share_counts_only_the_forwards_between_the_readings() -> None:
    before = [ForwardCount(100, 3), ForwardCount(50, 0)]
    after = [ForwardCount(300, 4), ForwardCount(250, 3)]
    assert overrun_share(before, after) == pytest.approx(4 / 400)
    assert overrun_share(before, before) == 0.0  # nothing ran: nothing overran
    with pytest.raises(ValueError, match="zip"):
        overrun_share(before, after[:1])


@pytest.mark.parametrize(("share", "is_rejected"), [(0.0, False), (0.01, False), (0.0101, True), (0.5, True)])
def test_a_run_with_more_than_one_percent_overruns_is_rejected(share: float, is_rejected: bool) -> None:
    assert OVERRUN_LIMIT == 0.01
    assert rejected(share) is is_rejected


def test_decode_speed_leaves_the_first_token_and_its_prefill_out() -> None:
    records = [record("si"), record("si", 1, output_tokens=21, total_seconds=4.5)]
    assert decode_tokens_per_second(records) == pytest.approx((10 + 20) / (2.0 + 4.0))
    assert decode_tokens_per_second([]) == 0.0
    assert tokens_per_second(records) == pytest.approx((11 + 21) / (2.5 + 4.5))  # what the model predicts


def test_the_prediction_is_the_simulators_for_the_padded_costs() -> None:
    prediction = predict(1000.0, 130.0, 0.75, 5, 4)
    c = 0.13
    assert prediction.drafter_cost == pytest.approx(c) and prediction.servers == 4
    assert prediction.target_only == pytest.approx(1.0)
    assert prediction.si == pytest.approx(1.0 / si_latency(c, 0.75, 5))
    assert prediction.dsi == pytest.approx(1.0 / choose_schedule(c, 0.75, 4).dsi.latency)
    assert prediction.dsi > prediction.si > prediction.target_only
    assert predict(1000.0, 130.0, 0.75, None, 1).lookahead >= 1  # no static k: SI's best


def test_a_row_reports_what_ran_and_checks_greedy_identity() -> None:
    baseline = [record("target-only")]
    dsi = [record("dsi"), record("dsi", scheduler_ran="si", token_ids=(1, 2, 3))]
    prediction = predict(200.0, 50.0, 0.75, 3, 2)
    row = build_row("dsi", dsi, baseline, prediction=prediction, share=0.02, greedy=True)
    assert row.schedulers_ran == ("dsi", "si") and row.rejected and row.greedy_identical
    assert row.verifications_preempted == 2 and row.target_replicas_used == 2
    assert row.predicted_tokens_per_second == prediction.dsi
    differing = build_row(
        "si", [record("si", token_ids=(9,))], baseline, prediction=None, share=0, greedy=True
    )
    assert differing.greedy_identical is False and differing.predicted_tokens_per_second is None
    sampled = build_row("si", [record("si")], baseline, prediction=None, share=0, greedy=False)
    assert sampled.greedy_identical is None and not sampled.rejected
    as_si = build_row(
        "dsi", [record("dsi", scheduler_ran="si")], baseline, prediction=prediction, share=0, greedy=True
    )
    assert as_si.predicted_tokens_per_second == prediction.si, "a dsi request run as SI: SI's model"


def test_the_table_marks_rejected_runs_and_dsi_requests_run_as_si() -> None:
    baseline = [record("target-only")]
    rows = [
        build_row("target-only", baseline, baseline, prediction=None, share=0.0, greedy=True),
        build_row("si", [record("si")], baseline, prediction=None, share=0.0, greedy=True),
        build_row(
            "dsi", [record("dsi", scheduler_ran="si")], baseline, prediction=None, share=0.2, greedy=True
        ),
    ]
    table = format_dsi_table(rows)
    assert table.count("\n| 2 |") == 3
    assert "20.0% REJECTED" in table and "REJECTED: more than 1% of the forwards" in table
    assert "ran some `dsi` requests as `si`" in table
    assert "| 1.00 |" in table  # x SI of the dsi row: equal speeds


def totals(seconds: float, *, overlapped: bool = False) -> RoundTotals:
    """4 rounds of 3 draft tokens, half accepted, 11 output tokens: drafter forwards 10 ms, target forwards
    100 ms (c = 0.1); the calls take 800 ms in all, 520 ms of it compute."""
    return RoundTotals(4, seconds, 11, 12, 4, 12, 6, 0.12, 0.4, 0.2, 0.6, overlapped=overlapped)


def target_only_totals() -> RoundTotals:
    """Target-only decoding of 11 tokens, 200 ms of target compute each."""
    return RoundTotals(11, 2.5, 11, 0, 11, 0, 0, 0.0, 2.2, 0.0, 2.2, overlapped=False)


def test_rows_break_a_round_down_and_compare_with_the_ideal_speedup() -> None:
    baseline = [record("target-only", totals=target_only_totals())]  # 11 tokens in 2.5 s
    si = build_row(
        "si",
        [record("si", total_seconds=2.0, totals=totals(2.0))],
        baseline,
        prediction=None,
        share=0,
        greedy=True,
    )
    breakdown = si.breakdown
    assert breakdown is not None and breakdown.measured_speedup == pytest.approx(1.25)
    assert breakdown.wire_seconds == pytest.approx(0.07) and breakdown.coordinator_seconds == pytest.approx(
        0.3
    )
    assert breakdown.model_speedup == pytest.approx(1 / si_latency(0.1, 0.5, 3))
    ideal = 11 * 0.2 / 0.52  # tokens x target-only compute per token / the compute of the rounds
    assert breakdown.ideal_speedup == pytest.approx(ideal) and breakdown.overhead == pytest.approx(
        1 - 1.25 / ideal
    )
    dsi = build_row(
        "dsi",
        [record("dsi", totals=totals(1.0, overlapped=True))],
        baseline,
        prediction=None,
        share=0,
        greedy=True,
    )
    assert dsi.breakdown is not None and dsi.breakdown.overlapped and dsi.breakdown.wire_seconds is None
    target_only = build_row("target-only", baseline, baseline, prediction=None, share=0, greedy=True)
    assert target_only.breakdown is None
    table = format_dsi_table([target_only, si, dsi])
    assert f"| 30.0 / 100.0 | 70.0 / 300.0 | 4.23 | {1 - 1.25 / ideal:.0%} |" in table
    assert "| 30.0 / 100.0 | overlapped | - | - |" in table  # compute overlaps under DSI: no ideal


def parse_bench(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="polyspec")
    bench_cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["bench", *argv])


def test_the_dsi_flags_parse_and_validate() -> None:
    args = parse_bench(["--replicas", "4,1,2", "--scheduler", "dsi", "--emulate-drafter-forward-ms", "130"])
    assert (args.replicas, args.scheduler, args.emulate_drafter_forward_ms) == ((4, 1, 2), ("dsi",), 130.0)
    options = BenchOptions(drafter="d", target="t", replicas=args.replicas, lookaheads=("static:5",))
    assert options.replicas == (1, 2, 4) and options.static_lookahead == 5
    assert BenchOptions(drafter="d", target="t").static_lookahead is None  # auto
    with pytest.raises(ValidationError, match="replica count"):
        BenchOptions(drafter="d", target="t", replicas=(0, 2))
    with pytest.raises(SystemExit):
        parse_bench(["--scheduler", "auto"])


def test_the_target_precision_reaches_every_target_service() -> None:
    from tools.bench.dsi import service_args

    args = parse_bench(["--replicas", "2", "--target-dtype", "bfloat16"])
    assert args.target_dtype == "bfloat16"
    options = BenchOptions(
        drafter="d", target="t", replicas=(2,), target_dtype=args.target_dtype, emulate_forward_ms=2000
    )
    drafter, target = service_args(options)
    assert target == [
        "--threads",
        "1",
        "--linear-kernel",
        "onednn-packed",
        "--dtype",
        "bfloat16",
        "--emulate-forward-ms",
        "2000",
    ]
    assert drafter[drafter.index("--dtype") + 1] == "bfloat16" and "--emulate-forward-ms" not in drafter
    assert BenchOptions(drafter="d", target="t").target_dtype == "float32"


def test_the_drafter_padding_is_a_labelled_benchmarking_flag() -> None:
    options = BenchOptions(drafter="d", target="t", emulate_forward_ms=1000, emulate_drafter_forward_ms=130)
    assert options.emulating
    flags = options.benchmarking_flags()
    assert len(flags) == 2 and "--emulate-drafter-forward-ms 130" in flags[1]


def test_dsi_coordinators_load_the_classifier_when_the_first_lookahead_needs_it(tmp_path: Path) -> None:
    from tools.bench.dsi import classifier_flags

    def options(*lookaheads: str) -> BenchOptions:
        return BenchOptions(
            drafter="d", target="t", replicas=(1, 2), lookaheads=lookaheads, disco_artifact=tmp_path
        )

    assert classifier_flags(options("disco:4", "static:3")) == ["--disco-artifact", str(tmp_path)]
    assert classifier_flags(options("auto+disco")) == ["--disco-artifact", str(tmp_path)]
    assert classifier_flags(options("static:3", "disco")) == []  # the DSI bench runs the first lookahead
    assert options("auto+disco").static_lookahead is None
