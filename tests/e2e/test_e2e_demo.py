"""`polyspec demo` end to end with a cheap real pair (SmolLM2-135M as drafter and target)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import processes_mentioning, run_polyspec

pytestmark = [pytest.mark.slow, pytest.mark.real_model]


def test_demo_runs_speculative_and_target_only_decoding(smollm2_dir: Path, tmp_path: Path) -> None:
    result = run_polyspec(
        ["--log-level", "WARNING", "demo", "--drafter", str(smollm2_dir), "--target", str(smollm2_dir),
         "--max-new-tokens", "8", "--log-dir", str(tmp_path)]
    )  # fmt: skip
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    out = result.stdout
    assert "=== prompt (HumanEval/0) ===" in out and "def has_close_elements" in out
    assert "=== completion ===" in out and "=== statistics ===" in out
    algorithm_row = next(line for line in out.splitlines() if line.strip().startswith("algorithm"))
    assert algorithm_row.split()[1:] == ["sd", "ar"]  # one tokenizer: auto runs standard SD
    tokens_row = next(line for line in out.splitlines() if line.strip().startswith("output tokens"))
    assert tokens_row.split()[2:] == ["8", "8"]
    assert "speedup (tokens/s):" in out and "a demo figure, not a benchmark" in out
    # Greedy speculative decoding is lossless: the same tokens as the target alone.
    assert "same tokens as target-only greedy decoding: yes" in out
    # The services logged to --log-dir and were all stopped.
    assert {p.name for p in tmp_path.glob("*.log")} == {"drafter.log", "target.log", "coordinator.log"}
    assert processes_mentioning(str(tmp_path)) == []


def test_demo_with_an_unknown_model_fails_clearly(tmp_path: Path) -> None:
    result = run_polyspec(["demo", "--drafter", "no-such-model", "--target", "no-such-model"], timeout=300)
    assert result.returncode == 1
    assert "error: model: 'no-such-model' is neither a known model" in result.stderr
