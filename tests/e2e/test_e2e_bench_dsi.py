"""`polyspec bench --replicas 1,2 --scheduler si,dsi` end to end on a tiny pair with padded forwards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.bench_cli import run_bench_cli
from tools.bench.dsi_report import FORMAT, FORMAT_VERSION, OVERRUN_LIMIT

pytestmark = [pytest.mark.slow, pytest.mark.real_model]

ROW_FIELDS = {
    "replicas", "mode", "prompts", "tokens_per_second", "decode_tokens_per_second", "acceptance",
    "schedulers_ran",
    "target_replicas_used", "verifications_preempted", "target_tokens_per_output_token", "greedy_identical",
    "predicted_tokens_per_second", "overrun_share", "rejected", "breakdown",
}  # fmt: skip


def test_dsi_bench_reports_every_replica_count_and_mode(
    tiny_llama_smollm2_vocab_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = str(tiny_llama_smollm2_vocab_dir)
    out = tmp_path / "dsi.json"
    code = run_bench_cli(
        ["--drafter", model, "--target", model, "--replicas", "2,1", "--scheduler", "si,dsi",
         "--prompts", "1", "--prompt-offset", "2", "--max-new-tokens", "6", "--lookahead", "static:3",
         "--temperatures", "0", "--threads", "1", "--linear-kernel", "torch",
         "--emulate-forward-ms", "200", "--emulate-drafter-forward-ms", "50",
         "--out", str(out), "--log-dir", str(tmp_path / "logs")]
    )  # fmt: skip
    assert code == 0
    document = json.loads(out.read_text())
    assert (document["format"], document["format_version"]) == (FORMAT, FORMAT_VERSION)
    assert document["settings"]["replicas"] == [1, 2] and document["overrun_limit"] == OVERRUN_LIMIT
    rows = {(row["replicas"], row["mode"]): row for row in document["rows"]}
    assert set(rows) == {(n, mode) for n in (1, 2) for mode in ("target-only", "si", "dsi")}
    for row in rows.values():
        assert set(row) == ROW_FIELDS
        assert row["prompts"] == 1 and row["tokens_per_second"] > 0
        assert row["greedy_identical"] is True  # same tokens for every scheduler and replica count
        assert row["rejected"] == (row["overrun_share"] > OVERRUN_LIMIT)
        assert row["predicted_tokens_per_second"] > 0
        assert set(row["schedulers_ran"]) <= {"target-only", "si", "dsi"}
    assert rows[(2, "si")]["schedulers_ran"] == ["si"]
    prediction = document["predictions"]["2"]
    assert prediction["drafter_cost"] == pytest.approx(0.25) and prediction["lookahead"] == 3
    assert len(document["records"]) == 6
    table = capsys.readouterr().out
    assert "| replicas | asked | ran | tok/s | decode tok/s |" in table and "BENCHMARKING FLAG" in table
