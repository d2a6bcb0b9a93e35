"""``polyspec bench --replicas 1,2,4 --scheduler si,dsi``: speculation parallelism over target replicas.

Starts one drafter and max(replicas) target services (each on ``--threads`` torch threads, every forward
padded: ``--emulate-forward-ms`` for the targets, ``--emulate-drafter-forward-ms`` for the drafter), then
per replica count N a coordinator over the first N targets. On each prompt it runs target-only decoding
and, per scheduler, the first drafting algorithm of ``--algorithms`` with the first lookahead (for
``disco[:K]`` and ``auto+disco`` the coordinators load ``--disco-artifact``), passing ``scheduler=``
per request (the coordinators keep their default, si). The scheduler each request really ran is recorded
from its statistics, so a ``dsi`` request that a coordinator ran as SI shows as such.
Each replica count's overruns come from the services' Info totals read before and after it. Pure parts:
``tools.bench.dsi_report``.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import grpc
from polyspec import Client, GenerationResult
from polyspec.v1 import model_pb2, model_pb2_grpc

from tools.bench.breakdown import RoundTotals
from tools.bench.describe import describe_machine, describe_model
from tools.bench.dsi_report import (
    DsiRecord,
    DsiRow,
    ForwardCount,
    Mode,
    Prediction,
    acceptance,
    build_dsi_document,
    build_row,
    format_dsi_table,
    overrun_share,
    predict,
)
from tools.bench.lookaheads import parse_bench_lookahead
from tools.bench.options import BenchOptions
from tools.bench.prompts import load_prompts
from tools.bench.records import BenchPrompt
from tools.demo import LocalStack, report_failure, resolve_model, sigterm_as_interrupt, wait_until_serving

CALL_TIMEOUT_SECONDS = 3600.0
INFO_BYTES = 256 * 1024 * 1024


def service_args(options: BenchOptions) -> tuple[list[str], list[str]]:
    """``serve model`` flags of the drafter and of every target: threads, kernels, precision, padding."""
    common = ["--threads", str(options.threads or 1), "--linear-kernel", options.linear_kernel]
    drafter_args = [*common, "--dtype", options.drafter_dtype, "--quantize", options.drafter_quantize]
    if options.emulate_drafter_forward_ms > 0:
        drafter_args += ["--emulate-forward-ms", f"{options.emulate_drafter_forward_ms:g}"]
    target_args = [*common, "--dtype", options.target_dtype]
    if options.emulate_forward_ms > 0:
        target_args += ["--emulate-forward-ms", f"{options.emulate_forward_ms:g}"]
    return drafter_args, target_args


def start_services(
    stack: LocalStack, drafter_dir: Path, target_dir: Path, options: BenchOptions
) -> tuple[str, list[str]]:
    """The drafter and max(replicas) targets, each padded and on its threads; their addresses."""
    drafter_args, target_args = service_args(options)
    drafter = stack.start("drafter", ["model", "--model", str(drafter_dir), *drafter_args])
    targets = [
        stack.start(f"target-{i}", ["model", "--model", str(target_dir), *target_args])
        for i in range(max(options.replicas))
    ]
    timeout = options.startup_timeout_seconds
    return wait_until_serving(drafter, timeout), [wait_until_serving(t, timeout) for t in targets]


def read_counts(addresses: Sequence[str]) -> list[ForwardCount]:
    """Each service's forwards and overruns so far (its Info)."""
    counts = []
    for address in addresses:
        # An Info carries the tokenizer's files: allow what the coordinator allows.
        with grpc.insecure_channel(
            address, options=[("grpc.max_receive_message_length", INFO_BYTES)]
        ) as channel:
            info = model_pb2_grpc.ModelServiceStub(channel).Info(model_pb2.InfoRequest(), timeout=30)
        counts.append(ForwardCount(info.forwards_served, info.emulated_overruns))
    return counts


def record_of(replicas: int, mode: Mode, prompt: BenchPrompt, result: GenerationResult) -> DsiRecord:
    stats = result.stats
    return DsiRecord(
        replicas=replicas,
        mode=mode,
        prompt_index=prompt.index,
        output_tokens=stats.output_tokens,
        total_seconds=stats.total_seconds,
        time_to_first_token_seconds=stats.time_to_first_token_seconds,
        draft_tokens=stats.draft_tokens,
        accepted_tokens=stats.accepted_tokens,
        scheduler_ran="target-only" if mode == "target-only" else stats.scheduler,
        target_replicas_used=stats.target_replicas_used,
        verifications_preempted=stats.verifications_preempted,
        target_tokens_per_output_token=stats.target_tokens_per_output_token,
        token_ids=tuple(result.token_ids),
        totals=RoundTotals(
            rounds=stats.rounds,
            seconds=stats.total_seconds,
            output_tokens=stats.output_tokens,
            drafter_forwards=stats.drafter_forwards,
            target_forwards=stats.target_forwards,
            draft_tokens=stats.draft_tokens,
            accepted_tokens=stats.accepted_tokens,
            drafter_compute_seconds=stats.drafter_compute_seconds,
            target_compute_seconds=stats.target_compute_seconds,
            drafter_call_seconds=stats.drafter_call_seconds,
            target_call_seconds=stats.target_call_seconds,
            overlapped=stats.scheduler == "dsi",
        ),
    )


def speculative_algorithm(options: BenchOptions) -> str:
    """The first drafting algorithm of ``--algorithms`` (sd by default; auto across vocabularies)."""
    return next((a for a in options.algorithms if a != "ar"), "auto")


def modes(options: BenchOptions) -> list[Mode]:
    return ["target-only", *options.schedulers]


def generate(client: Client, mode: Mode, prompt: BenchPrompt, options: BenchOptions) -> GenerationResult:
    speculative = mode != "target-only"
    return client.generate(
        prompt.text,
        max_new_tokens=options.max_new_tokens,
        temperature=options.temperatures[0],
        seed=options.seed + prompt.index,
        algorithm=speculative_algorithm(options) if speculative else "ar",
        lookahead=parse_bench_lookahead(options.lookaheads[0]).request if speculative else None,
        scheduler="si" if mode == "target-only" else mode,
    )


def run_replica_count(
    client: Client, replicas: int, prompts: Sequence[BenchPrompt], options: BenchOptions, out: IO[str]
) -> list[DsiRecord]:
    """Every mode on every prompt, the order rotated from prompt to prompt; one untimed warm-up first."""
    algorithm = speculative_algorithm(options)
    client.generate(prompts[0].text, max_new_tokens=4, temperature=0.0, algorithm=algorithm, scheduler="si")
    order = modes(options)
    records = []
    for position, prompt in enumerate(prompts):
        start = position % len(order)
        cells = []
        for mode in [*order[start:], *order[:start]]:
            record = record_of(replicas, mode, prompt, generate(client, mode, prompt, options))
            records.append(record)
            cells.append(f"{mode}->{record.scheduler_ran} {record.total_seconds:.2f}s")
        print(f"  N={replicas} {prompt.task_id}: {', '.join(cells)}", file=out, flush=True)
    return records


def rows_for(
    records: Sequence[DsiRecord], options: BenchOptions, share: float
) -> tuple[list[DsiRow], Prediction | None]:
    """One replica count's rows, and the model's prediction at the SI runs' measured acceptance."""
    by_mode = {mode: [r for r in records if r.mode == mode] for mode in modes(options)}
    prediction = None
    if options.emulate_forward_ms > 0 and options.emulate_drafter_forward_ms > 0:
        measured = acceptance(by_mode.get("si") or by_mode[options.schedulers[0]])
        prediction = predict(
            options.emulate_forward_ms,
            options.emulate_drafter_forward_ms,
            measured,
            options.static_lookahead,
            records[0].replicas,
        )
    greedy = options.temperatures[0] == 0
    rows = [
        build_row(mode, group, by_mode["target-only"], prediction=prediction, share=share, greedy=greedy)
        for mode, group in by_mode.items()
    ]
    return rows, prediction


@contextlib.contextmanager
def _services(
    options: BenchOptions, drafter_dir: Path, target_dir: Path, log_dir: Path, out: IO[str]
) -> Iterator[tuple[LocalStack, str, list[str]]]:
    with sigterm_as_interrupt(), LocalStack(log_dir, options.log_level) as stack:
        print(f"starting the drafter and {max(options.replicas)} target replicas ...", file=out, flush=True)
        drafter, targets = start_services(stack, drafter_dir, target_dir, options)
        yield stack, drafter, targets


def measure(
    options: BenchOptions, drafter_dir: Path, target_dir: Path, log_dir: Path, out: IO[str]
) -> tuple[list[DsiRecord], list[DsiRow], dict[int, Prediction | None]]:
    """Every replica count in turn over the same services; its records, rows and prediction."""
    prompts = load_prompts(options.prompt_offset, options.prompts, options.workload)
    records: list[DsiRecord] = []
    rows: list[DsiRow] = []
    predictions: dict[int, Prediction | None] = {}
    with _services(options, drafter_dir, target_dir, log_dir, out) as (stack, drafter, targets):
        for n in options.replicas:
            coordinator = stack.start(
                f"coordinator-{n}",
                [
                    "coordinator",
                    "--drafter",
                    drafter,
                    "--target",
                    ",".join(targets[:n]),
                    *classifier_flags(options),
                ],
            )
            address = wait_until_serving(coordinator, options.startup_timeout_seconds)
            before = read_counts([drafter, *targets[:n]])
            with Client(address, timeout=CALL_TIMEOUT_SECONDS) as client:
                group = run_replica_count(client, n, prompts, options, out)
            share = overrun_share(before, read_counts([drafter, *targets[:n]]))
            group_rows, predictions[n] = rows_for(group, options, share)
            records += group
            rows += group_rows
    return records, rows, predictions


def classifier_flags(options: BenchOptions) -> list[str]:
    """The coordinators' ``--disco-artifact`` when the first lookahead runs the trained stop classifier
    (``disco[:K]``, ``auto+disco``): under DSI a classifier stop ends a block."""
    if options.disco_artifact is None or not parse_bench_lookahead(options.lookaheads[0]).classifier:
        return []
    return ["--disco-artifact", str(options.disco_artifact)]


def _settings(options: BenchOptions) -> dict[str, Any]:
    return {
        "replicas": list(options.replicas),
        "schedulers": list(options.schedulers),
        "prompts": options.prompts,
        "prompt_offset": options.prompt_offset,
        "workload": options.workload,
        "max_new_tokens": options.max_new_tokens,
        "temperature": options.temperatures[0],
        "lookahead": options.lookaheads[0],
        "algorithm": speculative_algorithm(options),
        "threads_per_service": options.threads or 1,
        "drafter_dtype": f"{options.drafter_dtype}+{options.drafter_quantize}",
        "target_dtype": options.target_dtype,
        "emulate_forward_ms": options.emulate_forward_ms,
        "emulate_drafter_forward_ms": options.emulate_drafter_forward_ms,
        "benchmarking_flags": options.benchmarking_flags(),
    }


def write_results(
    options: BenchOptions, document: dict[str, Any], rows: Sequence[DsiRow], out: IO[str]
) -> Path:
    """The JSON document (atomically) and the table; returns the JSON path."""
    names = [document["models"][role]["name"] for role in ("drafter", "target")]
    path = options.out or Path("bench-results") / f"dsi__{names[0]}__{names[1]}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    partial.replace(path)
    print(format_dsi_table(rows), file=out)
    print(f"results: {path}", file=out, flush=True)
    return path


def run_dsi_bench(options: BenchOptions, out: IO[str] | None = None) -> int:
    """Runs the DSI benchmark; returns the exit code (0 ok, 1 failure, 130 interrupted)."""
    stream = sys.stdout if out is None else out
    for flag in options.benchmarking_flags():
        print(flag, file=stream)
    log_dir = options.log_dir or Path(tempfile.mkdtemp(prefix="polyspec-bench-dsi-"))
    try:
        drafter_dir, target_dir = resolve_model(options.drafter), resolve_model(options.target)
        models = {
            "drafter": describe_model(options.drafter, drafter_dir),
            "target": describe_model(options.target, target_dir),
        }
        log_dir.mkdir(parents=True, exist_ok=True)
        records, rows, predictions = measure(options, drafter_dir, target_dir, log_dir, stream)
    except KeyboardInterrupt:
        print("interrupted: every service was stopped", file=sys.stderr)
        return 130
    except Exception as exc:
        code = report_failure(exc)
        print(f"service logs: {log_dir}", file=sys.stderr)
        return code
    machine = describe_machine(options.threads)
    document = build_dsi_document(
        _settings(options), models, machine, rows=rows, predictions=predictions, records=records
    )
    write_results(options, document, rows, stream)
    return 0
