"""`polyspec bench load` end to end, very briefly, on tiny word-level models (no model download).

Every run starts and ends, its JSON holds each run's counts, goodput, latency, peak memory of the four
services and canary; at capacity and at 5x overload no admitted request fails, the excess of the
overload is refused, and the greedy canary never differs from its output before the first run.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from tests.support.tiny_models import build_word_model
from tools.bench import cli as bench_cli

pytestmark = pytest.mark.slow

SERVICES = {"drafter", "target-a", "target-b", "coordinator"}


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="polyspec")
    bench_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", "load", *argv])
    code: int = args.handler(args)
    return code


def test_bench_load_runs_every_run_and_reports_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = build_word_model(tmp_path / "model", "llama", seed=0)
    out = tmp_path / "load.json"
    code = _run_cli(
        ["--drafter", str(model), "--target", str(model), "--duration", "3", "--max-concurrent-requests", "2",
         "--max-queued-requests", "2", "--prompt", "w1 w2 w3 w4", "--prompt", "w9 w8 w7",
         "--max-new-tokens", "16", "--out", str(out), "--log-dir", str(tmp_path / "logs")]
    )  # fmt: skip
    assert code == 0
    document = json.loads(out.read_text())
    runs = {run["name"]: run for run in document["runs"]}
    assert list(runs) == ["capacity", "overload", "target-stop", "drafter-stop", "target-kill"]
    assert document["settings"]["clients"] == {
        "capacity": 2, "overload": 10, "target-stop": 2, "drafter-stop": 2, "target-kill": 2
    }  # fmt: skip
    for run in runs.values():
        assert set(run["peak_rss_mib"]) == SERVICES and all(v > 0 for v in run["peak_rss_mib"].values())
        assert run["canary"]["different"] == 0
    for name in ("capacity", "overload"):
        assert runs[name]["ok"] > 0 and runs[name]["failed"] == 0, runs[name]
        assert runs[name]["latency_seconds"]["p50"] > 0
    assert runs["overload"]["refused"] > 0 and runs["capacity"]["refused"] == 0
    assert runs["target-kill"]["fault"] == "SIGKILL target-b at 1.0 s"
    assert "SIGCONT drafter" in runs["drafter-stop"]["fault"]
    printed = capsys.readouterr().out
    assert (
        "| run | clients | ok | refused | failed |" in printed
        and "goodput at overload / at capacity" in printed
    )
