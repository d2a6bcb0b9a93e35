"""One ``polyspec bench`` run: services, then the transformers reference, then JSON, PNG and a table."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from coordinator.bench.options import BenchOptions
from coordinator.bench.records import ConfigurationRun
from coordinator.demo import report_failure


def _measure(
    options: BenchOptions, drafter_dir: Path, target_dir: Path, log_dir: Path, out: IO[str]
) -> list[ConfigurationRun]:
    """Services first; the reference after they stopped, so they do not compete for the cores."""
    from coordinator.bench.harness import run_services
    from coordinator.bench.prompts import load_prompts
    from coordinator.bench.reference import run_reference

    prompts = load_prompts(options.prompt_offset, options.prompts)
    runs = run_services(drafter_dir, target_dir, prompts, options, log_dir=log_dir, out=out)
    if options.reference:
        runs += run_reference(drafter_dir, target_dir, prompts, options, out)
    return runs


def _write_results(
    options: BenchOptions, models: dict[str, Any], runs: list[ConfigurationRun], out: IO[str]
) -> None:
    from coordinator.bench.describe import describe_machine
    from coordinator.bench.plot import write_plot
    from coordinator.bench.report import build_document, format_table, summarize

    summaries = summarize(runs, same_kernels=options.linear_kernel == "torch")
    created = datetime.now(UTC).isoformat(timespec="seconds")
    document = build_document(options, describe_machine(options.threads), models, summaries, created)
    drafter, target = models["drafter"]["name"], models["target"]["name"]
    json_path = options.json_path(drafter, target)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    plot_path = options.plot_path(json_path)
    write_plot(plot_path, summaries, options, drafter, target)
    print(format_table(summaries, options), file=out)
    print(f"results: {json_path}\nplot: {plot_path}", file=out)


def run_bench(options: BenchOptions, out: IO[str] | None = None) -> int:
    """Runs the benchmark; returns the exit code (0 ok, 1 failure, 130 interrupted)."""
    from coordinator.bench.describe import describe_model
    from coordinator.demo import resolve_model

    stream = sys.stdout if out is None else out
    for flag in options.benchmarking_flags():
        print(flag, file=stream)
    try:
        drafter_dir, target_dir = resolve_model(options.drafter), resolve_model(options.target)
        models = {
            "drafter": describe_model(options.drafter, drafter_dir),
            "target": describe_model(options.target, target_dir),
        }
    except Exception as exc:
        return report_failure(exc)
    log_dir = options.log_dir or Path(tempfile.mkdtemp(prefix="polyspec-bench-"))
    keep_logs = True
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        runs = _measure(options, drafter_dir, target_dir, log_dir, stream)
        _write_results(options, models, runs, stream)
        keep_logs = options.log_dir is not None
    except KeyboardInterrupt:
        print("interrupted: every service was stopped", file=sys.stderr)
        return 130
    except Exception as exc:
        code = report_failure(exc)
        print(f"service logs: {log_dir}", file=sys.stderr)
        return code
    finally:
        if not keep_logs:
            shutil.rmtree(log_dir, ignore_errors=True)
    return 0
