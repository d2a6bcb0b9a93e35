"""The demo's process handling without models: bounded waits that name the failing service, cleanup."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from polyspec import GenerationResult, GenerationStats

from tests.e2e.conftest import polyspec_command, processes_mentioning
from tools.demo import DemoError, LocalStack, format_report, humaneval_prompt, wait_until_serving


def test_a_service_that_exits_is_named_with_its_log_tail(tmp_path: Path) -> None:
    with LocalStack(tmp_path) as stack:
        child = stack.start("drafter", ["model", "--model", str(tmp_path / "missing-model")])
        with pytest.raises(DemoError) as info:
            wait_until_serving(child, timeout_seconds=120)
    message = str(info.value)
    assert message.startswith("drafter: exited with code 2 before serving")
    assert "is not a folder" in message  # the end of the service's own log


def test_a_service_that_never_serves_times_out_and_is_stopped(tmp_path: Path) -> None:
    with LocalStack(tmp_path, stop_grace_seconds=20) as stack:
        # A coordinator whose target never answers: alive, but never SERVING.
        child = stack.start(
            "coordinator", ["coordinator", "--target", "127.0.0.1:9", "--startup-timeout", "300"]
        )
        with pytest.raises(DemoError, match=r"^coordinator: still not serving after 3 s"):
            wait_until_serving(child, timeout_seconds=3)
    assert child.process.poll() is not None


def test_humaneval_prompt() -> None:
    task_id, prompt = humaneval_prompt(0)
    assert task_id == "HumanEval/0" and "def has_close_elements" in prompt
    assert humaneval_prompt(163)[0] == "HumanEval/163"
    with pytest.raises(DemoError, match="--prompt-index"):
        humaneval_prompt(164)


def _result(algorithm: str, token_ids: tuple[int, ...], tokens_per_second: float) -> GenerationResult:
    stats = GenerationStats(
        algorithm=algorithm, lookahead="static:4" if algorithm != "ar" else "", prompt_tokens=10,
        output_tokens=len(token_ids), draft_tokens=8, accepted_tokens=6, acceptance_rate=0.75,
        target_forwards=2, drafter_forwards=8, rounds=2, time_to_first_token_seconds=0.5, total_seconds=1.0,
        tokens_per_second=tokens_per_second, bytes_sent=1, bytes_received=2, emulated_latency=False,
        fallback_reason="", seed=1,
    )  # fmt: skip
    return GenerationResult("x = 1", token_ids, "length", stats)


def test_report_shows_both_runs_and_a_labelled_speedup() -> None:
    speculative = _result("sd", (1, 2, 3), 6.0)
    baseline = _result("ar", (1, 2, 3), 2.0)
    report = format_report("HumanEval/0", "def f():\n", speculative, baseline, greedy=True)
    assert "=== completion ===\nx = 1" in report
    assert "speedup (tokens/s): 3.00x" in report and "a demo figure, not a benchmark" in report
    assert "same tokens as target-only greedy decoding: yes" in report
    acceptance_row = next(line for line in report.splitlines() if "acceptance rate" in line)
    assert acceptance_row.split()[-2:] == ["75.0%", "-"]
    alone = format_report("HumanEval/0", "p", speculative, None, greedy=False)
    assert "speedup" not in alone and "target only" not in alone


@pytest.mark.real_model
def test_sigterm_during_startup_stops_every_service(smollm2_dir: Path, tmp_path: Path) -> None:
    log_dir = tmp_path / "logs"
    demo = subprocess.Popen(
        [*polyspec_command(), "demo", "--drafter", str(smollm2_dir), "--target", str(smollm2_dir),
         "--log-dir", str(log_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        for _ in range(600):
            if (log_dir / "target.log").exists() or demo.poll() is not None:
                break
            time.sleep(0.1)
        assert demo.poll() is None, "the demo ended before its services started"
        demo.send_signal(signal.SIGTERM)
        _, err = demo.communicate(timeout=120)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 130, err
    assert "interrupted: every service was stopped" in err
    assert processes_mentioning(str(log_dir)) == []
