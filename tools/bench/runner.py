"""One ``polyspec bench`` run: services, then the transformers reference, then JSON, PNG and a table.

The JSON document is rewritten after every services prompt (``"complete": false``) and after the
reference, so an interrupted or failed run keeps what it measured; the last write sets
``"complete": true`` and is followed by the PNG and the table. Every module the run needs is imported
when this one is, so later edits of the source tree cannot change a run in progress.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from tools.bench.describe import describe_disco_artifact, describe_machine, describe_model
from tools.bench.harness import run_services
from tools.bench.options import BenchOptions
from tools.bench.plot import write_plot
from tools.bench.prompts import load_prompts
from tools.bench.records import ConfigurationRun
from tools.bench.reference import run_reference
from tools.bench.report import Summary, build_document, format_table, summarize
from tools.demo import report_failure, resolve_model


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ResultWriter:
    """Writes one run's JSON document (again after each step), then its PNG and table."""

    options: BenchOptions
    machine: dict[str, Any]
    models: dict[str, Any]
    created: str
    out: IO[str]

    @property
    def json_path(self) -> Path:
        return self.options.json_path(self.models["drafter"]["name"], self.models["target"]["name"])

    def document(self, summaries: Sequence[Summary], *, complete: bool) -> dict[str, Any]:
        """The JSON document of the summarized runs (the runs so far unless ``complete``)."""
        return build_document(
            self.options,
            self.machine,
            self.models,
            summaries,
            self.created,
            updated=_now(),
            complete=complete,
        )

    def write(self, runs: Sequence[ConfigurationRun]) -> None:
        """(Re)writes the partial JSON document after a prompt."""
        self._write(self._summaries(runs), complete=False)

    def _write(self, summaries: Sequence[Summary], *, complete: bool) -> None:
        """Writes the JSON document atomically: a reader never sees a half-written file."""
        path = self.json_path
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        text = json.dumps(self.document(summaries, complete=complete), indent=2) + "\n"
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)

    def finish(self, runs: Sequence[ConfigurationRun]) -> None:
        """The complete JSON document, the PNG and the table."""
        summaries = self._summaries(runs)
        self._write(summaries, complete=True)
        plot_path = self.options.plot_path(self.json_path)
        write_plot(
            plot_path, summaries, self.options, self.models["drafter"]["name"], self.models["target"]["name"]
        )
        print(format_table(summaries, self.options), file=self.out)
        print(f"results: {self.json_path}\nplot: {plot_path}", file=self.out, flush=True)

    def _summaries(self, runs: Sequence[ConfigurationRun]) -> list[Summary]:
        return summarize(runs, same_kernels=self.options.linear_kernel == "torch")


def _measure(
    options: BenchOptions, drafter_dir: Path, target_dir: Path, log_dir: Path, writer: ResultWriter
) -> None:
    """Services first (unless ``--no-services``); the reference after they stopped, so they do not
    compete for the cores."""
    prompts = load_prompts(options.prompt_offset, options.prompts, options.workload)
    runs: list[ConfigurationRun] = []
    if options.services:
        runs = run_services(
            drafter_dir, target_dir, prompts, options, log_dir=log_dir, out=writer.out, on_prompt=writer.write
        )
    if options.reference:
        runs += run_reference(drafter_dir, target_dir, prompts, options, writer.out)
    writer.finish(runs)


def _describe_models(options: BenchOptions, drafter_dir: Path, target_dir: Path) -> dict[str, Any]:
    models = {
        "drafter": describe_model(options.drafter, drafter_dir),
        "target": describe_model(options.target, target_dir),
    }
    if options.disco_artifact is not None:
        models["disco_artifact"] = describe_disco_artifact(options.disco_artifact)
    return models


def _partial_results_note(writer: ResultWriter) -> None:
    if writer.json_path.exists():
        print(f'results so far ("complete": false): {writer.json_path}', file=sys.stderr)


def run_bench(options: BenchOptions, out: IO[str] | None = None) -> int:
    """Runs the benchmark; returns the exit code (0 ok, 1 failure, 130 interrupted)."""
    stream = sys.stdout if out is None else out
    for flag in options.benchmarking_flags():
        print(flag, file=stream)
    try:
        drafter_dir, target_dir = resolve_model(options.drafter), resolve_model(options.target)
        models = _describe_models(options, drafter_dir, target_dir)
        writer = ResultWriter(options, describe_machine(options.threads), models, _now(), stream)
    except Exception as exc:
        return report_failure(exc)
    log_dir = options.log_dir or Path(tempfile.mkdtemp(prefix="polyspec-bench-"))
    keep_logs = True
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        _measure(options, drafter_dir, target_dir, log_dir, writer)
        keep_logs = options.log_dir is not None
    except KeyboardInterrupt:
        print("interrupted: every service was stopped", file=sys.stderr)
        _partial_results_note(writer)
        return 130
    except Exception as exc:
        code = report_failure(exc)
        print(f"service logs: {log_dir}", file=sys.stderr)
        _partial_results_note(writer)
        return code
    finally:
        if not keep_logs:
            shutil.rmtree(log_dir, ignore_errors=True)
    return 0
