"""The services side: drafter, target and coordinator on loopback, every configuration through the SDK."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

from coordinator.bench.options import BenchOptions
from coordinator.bench.records import BenchPrompt, Configuration, ConfigurationRun, PromptRecord
from coordinator.demo import LocalStack, sigterm_as_interrupt, start_pair

if TYPE_CHECKING:
    from polyspec import Client, GenerationResult

CALL_TIMEOUT_SECONDS = 1800.0
WARMUP_TOKENS = 8
# Status codes with which the coordinator refuses a request it cannot run for this pair or setting.
REFUSAL_CODES = frozenset({"INVALID_ARGUMENT", "FAILED_PRECONDITION", "UNIMPLEMENTED"})


def service_configurations(options: BenchOptions) -> list[Configuration]:
    """Per temperature: ``ar`` first, then each other algorithm with each lookahead."""
    configurations = []
    for temperature in options.temperatures:
        for algorithm in options.algorithms:
            if algorithm == "ar":
                configurations.append(Configuration("services", "ar", temperature))
                continue
            for lookahead in options.lookaheads:
                configurations.append(Configuration("services", algorithm, temperature, lookahead))
    return configurations


def start_stack(
    stack: LocalStack, drafter_dir: Path, target_dir: Path, options: BenchOptions, out: IO[str]
) -> str:
    """Starts drafter, target (with the benchmarking flag, if any) and coordinator; returns its address."""
    threads = [] if options.threads is None else ["--threads", str(options.threads)]
    threads += ["--linear-kernel", options.linear_kernel]
    target_args = list(threads)
    if options.emulating:
        target_args += ["--emulate-forward-ms", f"{options.emulate_forward_ms:g}"]
    return start_pair(
        stack,
        drafter_dir,
        target_dir,
        options.startup_timeout_seconds,
        out,
        drafter_args=threads,
        target_args=target_args,
    )


def run_services(
    drafter_dir: Path,
    target_dir: Path,
    prompts: Sequence[BenchPrompt],
    options: BenchOptions,
    *,
    log_dir: Path,
    out: IO[str],
) -> list[ConfigurationRun]:
    """Runs every services configuration on every prompt (sequential requests, batch 1)."""
    from polyspec import Client

    runs = []
    with sigterm_as_interrupt(), LocalStack(log_dir, options.log_level) as stack:
        address = start_stack(stack, drafter_dir, target_dir, options, out)
        print(f"coordinator on {address}; warming up ...", file=out, flush=True)
        with Client(address, timeout=CALL_TIMEOUT_SECONDS) as client:
            client.generate(
                prompts[0].text,
                max_new_tokens=min(WARMUP_TOKENS, options.max_new_tokens),
                temperature=0.0,
                algorithm="auto",
                seed=options.seed,
            )
            for configuration in service_configurations(options):
                runs.append(run_configuration(client, configuration, prompts, options, out))
    return runs


def run_configuration(
    client: Client,
    configuration: Configuration,
    prompts: Sequence[BenchPrompt],
    options: BenchOptions,
    out: IO[str],
) -> ConfigurationRun:
    """One configuration on every prompt; a refusal by the server skips it with the server's message."""
    from polyspec import PolyspecError

    run = ConfigurationRun(configuration)
    print(f"  {configuration.label}: ", end="", file=out, flush=True)
    for prompt in prompts:
        try:
            run.records.append(_generate(client, configuration, prompt, options))
        except PolyspecError as exc:
            if exc.code_name not in REFUSAL_CODES:
                raise
            run.records.clear()
            run.skipped = f"{exc.code_name}: {exc.message}"
            print(f"skipped ({run.skipped})", file=out, flush=True)
            return run
        print(".", end="", file=out, flush=True)
    print(" done", file=out, flush=True)
    return run


def _generate(
    client: Client, configuration: Configuration, prompt: BenchPrompt, options: BenchOptions
) -> PromptRecord:
    seed = options.seed + prompt.index
    started = time.perf_counter()
    result = client.generate(
        prompt.text,
        max_new_tokens=options.max_new_tokens,
        temperature=configuration.temperature,
        seed=seed,
        algorithm=configuration.method,
        lookahead=configuration.lookahead,
    )
    return record_from_result(prompt, result, time.perf_counter() - started)


def record_from_result(prompt: BenchPrompt, result: GenerationResult, client_seconds: float) -> PromptRecord:
    """The record of one SDK result."""
    stats = result.stats
    return PromptRecord(
        prompt_index=prompt.index,
        task_id=prompt.task_id,
        output_tokens=stats.output_tokens,
        seconds=stats.total_seconds,
        tokens_per_second=stats.tokens_per_second,
        finish_reason=result.finish_reason,
        token_ids=tuple(result.token_ids),
        client_seconds=client_seconds,
        time_to_first_token_seconds=stats.time_to_first_token_seconds,
        acceptance_rate=stats.acceptance_rate,
        draft_tokens=stats.draft_tokens,
        accepted_tokens=stats.accepted_tokens,
        target_forwards=stats.target_forwards,
        rounds=stats.rounds,
        bytes_sent=stats.bytes_sent,
        bytes_received=stats.bytes_received,
        algorithm_ran=stats.algorithm,
        lookahead_ran=stats.lookahead,
        fallback_reason=stats.fallback_reason,
        emulated_latency=stats.emulated_latency,
        seed=stats.seed,
    )
