"""Paired speedups, the table and the JSON document of partial and complete runs."""

from __future__ import annotations

import dataclasses
import io
import json
import math
from pathlib import Path

import pytest

from tests.unit.bench.records import record, run
from tools.bench.options import BenchOptions
from tools.bench.records import Configuration, ConfigurationRun
from tools.bench.report import (
    FORMAT_VERSION,
    aggregate,
    build_document,
    format_table,
    paired_speedup,
    summarize,
)
from tools.bench.runner import ResultWriter

SERVICES_AR = Configuration("services", "ar", 0.0)
SERVICES_SD = Configuration("services", "sd", 0.0, "auto")
SERVICES_TLI = Configuration("services", "tli", 0.0, "auto")
TRANSFORMERS_AR = Configuration("transformers", "ar", 0.0)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def measured_runs() -> list[ConfigurationRun]:
    """Seconds per output token -- services ar: 0.2, 0.4, 0.2 (prompt 2 only ar); sd: 0.1, 0.05, 0.1
    (prompt 3 only sd); transformers ar: 0.3, 0.6. So sd is 2x and 8x faster than the services' ar on
    the prompts both ran, 3x and 12x faster than transformers' ar."""
    return [
        run(SERVICES_AR, (0, 10, 2.0), (1, 20, 8.0), (2, 5, 1.0)),
        run(SERVICES_SD, (0, 10, 1.0), (1, 20, 1.0), (3, 30, 3.0)),
        run(TRANSFORMERS_AR, (0, 10, 3.0), (1, 20, 12.0)),
    ]


def test_paired_speedup_is_the_geometric_mean_of_per_prompt_speedups() -> None:
    services_ar, services_sd, transformers_ar = measured_runs()
    assert paired_speedup(services_sd, services_ar) == pytest.approx(4.0)  # sqrt(2 * 8)
    assert paired_speedup(services_sd, transformers_ar) == pytest.approx(6.0)  # sqrt(3 * 12)
    assert paired_speedup(transformers_ar, services_ar) == pytest.approx(2 / 3)  # 0.2/0.3 and 0.4/0.6
    assert paired_speedup(services_ar, services_ar) == 1.0
    assert paired_speedup(services_sd, None) is None
    assert (
        paired_speedup(services_sd, ConfigurationRun(SERVICES_AR, skipped="FAILED_PRECONDITION: x")) is None
    )


def test_prompts_without_output_tokens_are_left_out_of_the_paired_speedup() -> None:
    ar = run(SERVICES_AR, (0, 10, 2.0), (1, 0, 0.5))
    sd = run(SERVICES_SD, (0, 10, 0.5), (1, 0, 0.1))
    assert paired_speedup(sd, ar) == pytest.approx(4.0)
    assert paired_speedup(run(SERVICES_SD, (1, 0, 0.1)), ar) is None


def test_summaries_carry_paired_and_aggregate_speedups() -> None:
    summaries = {s.run.configuration: s for s in summarize(measured_runs(), same_kernels=True)}
    sd = summaries[SERVICES_SD]
    assert sd.paired_speedup_vs_services_ar == pytest.approx(4.0)
    assert sd.paired_speedup_vs_transformers_ar == pytest.approx(6.0)
    # The aggregate ratio uses every prompt each ran: (60 tokens / 5 s) / (35 tokens / 11 s).
    assert sd.speedup_vs_services_ar == pytest.approx((60 / 5) / (35 / 11))
    assert sd.speedup_vs_transformers_ar == pytest.approx((60 / 5) / (30 / 15))
    assert summaries[SERVICES_AR].paired_speedup_vs_services_ar == 1.0
    assert summaries[TRANSFORMERS_AR].paired_speedup_vs_services_ar == pytest.approx(2 / 3)


def test_the_table_shows_paired_speedups_in_aligned_columns() -> None:
    runs = [*measured_runs(), ConfigurationRun(SERVICES_TLI, skipped="FAILED_PRECONDITION: no")]
    table = format_table(summarize(runs, same_kernels=True), BenchOptions(drafter="d", target="t"))
    lines = table.splitlines()
    header, rows = lines[0], lines[1:4]
    assert header.endswith(
        "  vs ar paired vs hf ar hf paired greedy== drf ms/r tgt ms/r  wire ms/r coord ms/r  ideal overhead"
    )
    assert all(len(row) == len(header) for row in rows)
    sd_row = lines[2]
    assert sd_row.startswith("services sd [auto] T=0")
    assert "4.00x" in sd_row and "6.00x" in sd_row
    assert lines[4].startswith("services tli [auto] T=0  skipped: FAILED_PRECONDITION: no")
    assert any("geometric mean of per-prompt speedups" in line for line in lines)


def writer(tmp_path: Path, out: io.StringIO) -> ResultWriter:
    options = BenchOptions(
        drafter="d", target="t", out=tmp_path / "results" / "pair.json", linear_kernel="torch"
    )
    models = {"drafter": {"name": "drafter-model"}, "target": {"name": "target-model"}}
    return ResultWriter(options, {"cpu_count": 2}, models, "2030-01-02T03:04:05+00:00", out)


def test_the_document_of_a_partial_run_says_it_is_incomplete(tmp_path: Path) -> None:
    services_ar, services_sd, _ = measured_runs()
    partial = [services_ar, services_sd, ConfigurationRun(SERVICES_TLI, skipped="UNIMPLEMENTED: not here")]
    options = BenchOptions(drafter="d", target="t")
    summaries = summarize(partial, same_kernels=False)
    document = build_document(options, {}, {}, summaries, "created", updated="later", complete=False)
    assert (document["format_version"], FORMAT_VERSION) == (2, 2)
    assert document["complete"] is False
    assert (document["created"], document["updated"]) == ("created", "later")
    entries = {entry["label"]: entry for entry in document["configurations"]}
    assert entries["services sd [auto] T=0"]["paired_speedup_vs_services_ar"] == pytest.approx(4.0)
    assert entries["services sd [auto] T=0"]["paired_speedup_vs_transformers_ar"] is None
    assert entries["services sd [auto] T=0"]["aggregate"]["prompts"] == 3
    assert entries["services tli [auto] T=0"]["skipped"] == "UNIMPLEMENTED: not here"
    assert entries["services tli [auto] T=0"]["paired_speedup_vs_services_ar"] is None


def test_the_writer_rewrites_the_document_after_each_step_and_completes_it(tmp_path: Path) -> None:
    out = io.StringIO()
    results = writer(tmp_path, out)
    services_ar, services_sd, transformers_ar = measured_runs()
    results.write([services_ar, services_sd])
    path = tmp_path / "results" / "pair.json"
    first = json.loads(path.read_text())
    assert first["complete"] is False and len(first["configurations"]) == 2
    assert out.getvalue() == ""  # the table comes with the complete results only
    results.finish([services_ar, services_sd, transformers_ar])
    document = json.loads(path.read_text())
    assert document["complete"] is True and document["created"] == first["created"]
    assert document["machine"] == {"cpu_count": 2} and document["format_version"] == FORMAT_VERSION
    labels = [entry["label"] for entry in document["configurations"]]
    assert labels == ["services ar T=0", "services sd [auto] T=0", "transformers ar T=0"]
    sd = document["configurations"][1]
    assert math.isclose(sd["paired_speedup_vs_transformers_ar"], 6.0)
    assert sorted(p.name for p in path.parent.iterdir()) == ["pair.json", "pair.png"]  # no leftover partial
    assert path.with_suffix(".png").read_bytes()[:8] == PNG_MAGIC
    table = out.getvalue()
    assert "services sd [auto] T=0" in table and f"results: {path}" in table


def test_the_mean_draft_length_is_draft_tokens_per_round() -> None:
    records = [
        dataclasses.replace(record(0, 10, 1.0), draft_tokens=12, rounds=4),
        dataclasses.replace(record(1, 10, 1.0), draft_tokens=3, rounds=6),
    ]
    assert aggregate(records).draft_tokens_per_round == pytest.approx(15 / 10)
    assert aggregate([record(0, 10, 1.0)]).draft_tokens_per_round is None  # not measured (transformers)
