"""``polyspec bench load``'s summaries and table, on chosen outcomes."""

from __future__ import annotations

import pytest

from tools.bench.load import LoadOptions
from tools.bench.load_report import CanaryTally, Outcome, RunRecord, build_document, format_table, percentile


def _run(name: str, outcomes: list[Outcome], seconds: float = 10.0) -> RunRecord:
    canary = CanaryTally(identical=3)
    canary.errors["RESOURCE_EXHAUSTED"] += 1
    return RunRecord(
        name, 4, seconds, "none", outcomes, 1, canary, {"drafter": 100 << 20, "coordinator": 50 << 20}
    )


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (
        percentile(values, 0.5) == 50.0
        and percentile(values, 0.9) == 90.0
        and percentile(values, 0.99) == 99.0
    )
    assert percentile([3.0], 0.99) == 3.0
    assert percentile([], 0.5) is None


def test_a_document_counts_goodput_from_ok_requests_only() -> None:
    capacity = _run("capacity", [Outcome("ok", 1.0, 10), Outcome("ok", 2.0, 30)])
    overload = _run(
        "overload",
        [
            Outcome("ok", 1.5, 36),
            Outcome("refused", 0.01, code="RESOURCE_EXHAUSTED"),
            Outcome("failed", 3.0, code="UNAVAILABLE"),
        ],
    )
    document = build_document({"x": 1}, {"cpu_count": 2}, [capacity, overload])
    first, second = document["runs"]
    assert (first["ok"], first["refused"], first["failed"], first["ok_tokens"]) == (2, 0, 0, 40)
    assert first["goodput_tokens_per_second"] == pytest.approx(4.0)
    assert first["goodput_requests_per_second"] == pytest.approx(0.2)
    assert first["latency_seconds"] == {"p50": 1.0, "p90": 2.0, "p99": 2.0}
    assert (second["ok"], second["refused"], second["failed"]) == (1, 1, 1)
    assert second["failures"] == {"UNAVAILABLE": 1}
    assert document["overload_goodput_ratio"] == pytest.approx(0.9)
    assert second["peak_rss_mib"] == {"drafter": 100.0, "coordinator": 50.0}
    table = format_table(document)
    assert table.splitlines()[0].startswith("| run | clients | ok | refused | failed | ok tok/s")
    assert "| overload | 4 | 1 | 1 | 1 (UNAVAILABLE 1) | 3.6 | 0.10 |" in table
    assert "3/3 (1 not run)" in table
    assert table.endswith("goodput at overload / at capacity: 0.90")


def test_load_options_size_each_run() -> None:
    options = LoadOptions(drafter="d", target="t", max_concurrent_requests=3, overload_factor=5)
    assert options.clients("capacity") == 3 and options.clients("overload") == 15
    assert options.clients("target-kill") == 3
    with pytest.raises(ValueError):
        LoadOptions(drafter="d", target="t", runs=())
