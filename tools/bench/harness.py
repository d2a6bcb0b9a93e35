"""The services side: drafter, target and coordinator on loopback, every configuration through the SDK.

The configurations are interleaved per prompt: each prompt gets one untimed warm-up generation (so its
prefill shapes are warm for every configuration), then every configuration runs on it, starting at a
different configuration for each prompt. Warm-up effects and the machine's drift over minutes then
fall on every configuration alike instead of on whichever ran first.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TypeVar

from polyspec import Client, GenerationResult, PolyspecError

from tools.bench.options import BenchOptions
from tools.bench.records import BenchPrompt, Configuration, ConfigurationRun, PromptRecord
from tools.demo import LocalStack, sigterm_as_interrupt, start_pair

T = TypeVar("T")
Generate = Callable[[Configuration, BenchPrompt], PromptRecord]
"""One timed generation of a configuration on a prompt."""
WarmUp = Callable[[BenchPrompt], None]
"""One untimed generation on a prompt before its configurations run."""
PromptDone = Callable[[list[ConfigurationRun]], None]
"""Called after each prompt with every configuration's run so far."""

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


def interleaved_order(configurations: Sequence[T], prompt_position: int) -> list[T]:
    """The configurations in the order the prompt at ``prompt_position`` runs them: rotated to start at
    ``prompt_position mod n``, so that over n prompts each configuration runs first once."""
    if not configurations:
        return []
    start = prompt_position % len(configurations)
    return [*configurations[start:], *configurations[:start]]


def start_stack(
    stack: LocalStack, drafter_dir: Path, target_dir: Path, options: BenchOptions, out: IO[str]
) -> str:
    """Starts drafter, target (with the benchmarking flag, if any) and coordinator; returns its address."""
    threads = [] if options.threads is None else ["--threads", str(options.threads)]
    threads += ["--linear-kernel", options.linear_kernel]
    target_args = list(threads)
    drafter_args = [*threads, "--dtype", options.drafter_dtype, "--quantize", options.drafter_quantize]
    if options.emulating:
        target_args += ["--emulate-forward-ms", f"{options.emulate_forward_ms:g}"]
    return start_pair(
        stack,
        drafter_dir,
        target_dir,
        options.startup_timeout_seconds,
        out,
        drafter_args=drafter_args,
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
    on_prompt: PromptDone | None = None,
) -> list[ConfigurationRun]:
    """Runs every services configuration on every prompt (sequential requests, batch 1), interleaved."""
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
            return run_interleaved(
                service_configurations(options),
                prompts,
                generate=lambda configuration, prompt: _generate(client, configuration, prompt, options),
                warm_up=lambda prompt: _warm_up_prompt(client, prompt, options),
                out=out,
                on_prompt=on_prompt,
            )


def run_interleaved(
    configurations: Sequence[Configuration],
    prompts: Sequence[BenchPrompt],
    *,
    generate: Generate,
    warm_up: WarmUp,
    out: IO[str],
    on_prompt: PromptDone | None = None,
) -> list[ConfigurationRun]:
    """Per prompt: ``warm_up``, then every configuration not skipped yet, in ``interleaved_order`` of
    those; one progress line per prompt. Returns one run per configuration, in configuration order."""
    runs = {configuration: ConfigurationRun(configuration) for configuration in configurations}
    for position, prompt in enumerate(prompts):
        warm_up(prompt)
        active = [configuration for configuration in configurations if runs[configuration].skipped is None]
        cells = {
            configuration: run_one(runs[configuration], prompt, generate)
            for configuration in interleaved_order(active, position)
        }
        progress = ", ".join(cells[configuration] for configuration in active)
        print(f"  {prompt.task_id}: {progress}", file=out, flush=True)
        if on_prompt is not None:
            on_prompt(list(runs.values()))
    return list(runs.values())


def run_one(run: ConfigurationRun, prompt: BenchPrompt, generate: Generate) -> str:
    """Appends the record of ``run``'s configuration on ``prompt``, or on a refusal by the server drops
    its records and marks it skipped with the server's message; returns the progress cell."""
    name = short_label(run.configuration)
    try:
        record = generate(run.configuration, prompt)
    except PolyspecError as exc:
        if exc.code_name not in REFUSAL_CODES:
            raise
        run.records.clear()
        run.skipped = f"{exc.code_name}: {exc.message}"
        return f"{name} skipped ({run.skipped})"
    run.records.append(record)
    return f"{name} {record.seconds:.{2 if record.seconds < 10 else 1}f}s"


def short_label(configuration: Configuration) -> str:
    """The label of a services configuration in progress lines (no engine)."""
    lookahead = f" [{configuration.lookahead}]" if configuration.lookahead else ""
    return f"{configuration.method}{lookahead} T={configuration.temperature:g}"


def _warm_up_prompt(client: Client, prompt: BenchPrompt, options: BenchOptions) -> None:
    client.generate(prompt.text, max_new_tokens=1, temperature=0.0, algorithm="ar", seed=options.seed)


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
