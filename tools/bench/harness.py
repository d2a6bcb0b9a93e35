"""The services side: drafter, target and coordinator on loopback, every configuration through the SDK.

The configurations are interleaved per prompt: each prompt gets one untimed warm-up generation (so its
prefill shapes are warm for every configuration), then every configuration runs on it, starting at a
different configuration for each prompt. Warm-up effects and the machine's drift over minutes then
fall on every configuration alike instead of on whichever ran first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

from polyspec import Client, GenerationResult, PolyspecError

from tools.bench.lookaheads import classifier_specs, parse_bench_lookahead
from tools.bench.options import BenchOptions
from tools.bench.records import BenchPrompt, Configuration, ConfigurationRun, PromptRecord
from tools.demo import LocalStack, sigterm_as_interrupt, start_pair, wait_until_serving

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
    """Per temperature: ``ar`` first, then each other algorithm with each lookahead; with a lookup drafter
    also ``lookup`` (it alone drafts) and ``ALGORITHM+lookup`` (asked first, the model drafter otherwise)
    with each lookahead that does not need the trained stop classifier (their coordinators have none)."""
    drafting: list[str] = [a for a in options.algorithms if a != "ar"]
    lookup_methods = [] if options.lookup == "none" else ["lookup", *(f"{a}+lookup" for a in drafting)]
    plain = [spec for spec in options.lookaheads if not parse_bench_lookahead(spec).classifier]
    configurations = []
    for temperature in options.temperatures:
        configurations.append(Configuration("services", "ar", temperature))
        for method in drafting:
            for lookahead in options.lookaheads:
                configurations.append(Configuration("services", method, temperature, lookahead))
        for method in lookup_methods:
            for lookahead in plain:
                configurations.append(Configuration("services", method, temperature, lookahead))
    return configurations


@dataclass(frozen=True)
class Route:
    """Where a services configuration runs and what its request asks for."""

    address: str
    algorithm: str
    lookahead: str | None


@dataclass(frozen=True)
class Coordinators:
    """The coordinators of a bench stack: the model drafter's; with a lookup drafter the lookup's alone
    and the combined one; with a trained stop classifier (``--disco-artifact``) one over the same
    drafter and target that has it."""

    model: str
    lookup: str | None = None
    combined: str | None = None
    disco: str | None = None

    @property
    def addresses(self) -> list[str]:
        return [a for a in (self.model, self.lookup, self.combined, self.disco) if a is not None]

    def route(self, configuration: Configuration) -> Route:
        """The coordinator, the algorithm and the request's lookahead of a services configuration."""
        method = configuration.method
        lookahead = None
        if configuration.lookahead is not None:
            spec = parse_bench_lookahead(configuration.lookahead)
            lookahead = spec.request
            if spec.classifier:
                if self.disco is None:
                    raise ValueError(f"{configuration.label}: no coordinator with a stop classifier")
                return Route(self.disco, method, lookahead)
        if method == "lookup" and self.lookup is not None:
            return Route(self.lookup, "sd", lookahead)
        if method.endswith("+lookup") and self.combined is not None:
            return Route(self.combined, method.removesuffix("+lookup"), lookahead)
        return Route(self.model, method, lookahead)


def interleaved_order(configurations: Sequence[T], prompt_position: int) -> list[T]:
    """The configurations in the order the prompt at ``prompt_position`` runs them: rotated to start at
    ``prompt_position mod n``, so that over n prompts each configuration runs first once."""
    if not configurations:
        return []
    start = prompt_position % len(configurations)
    return [*configurations[start:], *configurations[:start]]


def start_stack(
    stack: LocalStack, drafter_dir: Path, target_dir: Path, options: BenchOptions, out: IO[str]
) -> Coordinators:
    """Starts drafter, target (with the benchmarking flag, if any) and coordinator, and with ``lookup`` a
    lookup drafter and its two coordinators; returns the coordinators' addresses."""
    threads = [] if options.threads is None else ["--threads", str(options.threads)]
    threads += ["--linear-kernel", options.linear_kernel]
    target_args = [*threads, "--dtype", options.target_dtype]
    drafter_args = [*threads, "--dtype", options.drafter_dtype, "--quantize", options.drafter_quantize]
    if options.emulate_forward_ms > 0:
        target_args += ["--emulate-forward-ms", f"{options.emulate_forward_ms:g}"]
    if options.emulate_drafter_forward_ms > 0:
        drafter_args += ["--emulate-forward-ms", f"{options.emulate_drafter_forward_ms:g}"]
    model = start_pair(
        stack,
        drafter_dir,
        target_dir,
        options.startup_timeout_seconds,
        out,
        drafter_args=drafter_args,
        target_args=target_args,
    )
    coordinators = Coordinators(model)
    if options.lookup != "none":
        coordinators = _start_lookup(stack, target_dir, options, out, model)
    if options.disco_artifact is not None and classifier_specs(options.lookaheads):
        coordinators = dataclasses.replace(coordinators, disco=_start_disco(stack, options, out))
    return coordinators


def _start_disco(stack: LocalStack, options: BenchOptions, out: IO[str]) -> str:
    """A second coordinator over the same drafter and target, with the trained stop classifier."""
    assert options.disco_artifact is not None
    timeout = options.startup_timeout_seconds
    by_name = {child.name: child for child in stack.children}
    drafter = wait_until_serving(by_name["drafter"], timeout)
    target = wait_until_serving(by_name["target"], timeout)
    print(
        f"starting a coordinator with the stop classifier {options.disco_artifact} ...", file=out, flush=True
    )
    child = stack.start(
        "coordinator-disco",
        [
            "coordinator",
            "--drafter",
            drafter,
            "--target",
            target,
            "--disco-artifact",
            str(options.disco_artifact),
        ],
    )
    return wait_until_serving(child, timeout)


def _start_lookup(
    stack: LocalStack, target_dir: Path, options: BenchOptions, out: IO[str], model: str
) -> Coordinators:
    """The lookup drafter, a coordinator where it alone drafts and one that combines it with the model
    drafter (the drafter and target services are shared)."""
    timeout = options.startup_timeout_seconds
    by_name = {child.name: child for child in stack.children}
    drafter = wait_until_serving(by_name["drafter"], timeout)
    target = wait_until_serving(by_name["target"], timeout)
    print(f"starting a {options.lookup} lookup drafter and its coordinators ...", file=out, flush=True)
    lookup_child = stack.start(
        "lookup-drafter", ["drafter", "--kind", options.lookup, "--target-model", str(target_dir)]
    )
    lookup = wait_until_serving(lookup_child, timeout)
    alone = stack.start("coordinator-lookup", ["coordinator", "--drafter", lookup, "--target", target])
    combined = stack.start(
        "coordinator-combined",
        ["coordinator", "--drafter", drafter, "--lookup-drafter", lookup, "--target", target],
    )
    return Coordinators(model, wait_until_serving(alone, timeout), wait_until_serving(combined, timeout))


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
        coordinators = start_stack(stack, drafter_dir, target_dir, options, out)
        print(f"coordinator on {coordinators.model}; warming up ...", file=out, flush=True)
        with contextlib.ExitStack() as clients_open:
            clients = {
                address: clients_open.enter_context(Client(address, timeout=CALL_TIMEOUT_SECONDS))
                for address in coordinators.addresses
            }
            for client in clients.values():
                client.generate(
                    prompts[0].text,
                    max_new_tokens=min(WARMUP_TOKENS, options.max_new_tokens),
                    temperature=0.0,
                    algorithm="auto",
                    seed=options.seed,
                )

            def generate(configuration: Configuration, prompt: BenchPrompt) -> PromptRecord:
                route = coordinators.route(configuration)
                return _generate(clients[route.address], configuration, route, prompt, options)

            return run_interleaved(
                service_configurations(options),
                prompts,
                generate=generate,
                warm_up=lambda prompt: _warm_up_prompt(clients[coordinators.model], prompt, options),
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
    client: Client, configuration: Configuration, route: Route, prompt: BenchPrompt, options: BenchOptions
) -> PromptRecord:
    seed = options.seed + prompt.index
    started = time.perf_counter()
    result = client.generate(
        prompt.text,
        max_new_tokens=options.max_new_tokens,
        temperature=configuration.temperature,
        seed=seed,
        algorithm=route.algorithm,
        lookahead=route.lookahead,
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
        drafter_forwards=stats.drafter_forwards,
        scheduler_ran=stats.scheduler,
        drafter_compute_seconds=stats.drafter_compute_seconds,
        target_compute_seconds=stats.target_compute_seconds,
        drafter_call_seconds=stats.drafter_call_seconds,
        target_call_seconds=stats.target_call_seconds,
    )
