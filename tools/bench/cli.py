"""``polyspec bench``: argparse only at import time; the handler imports the harness lazily."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from tools.bench.lookaheads import missing_artifact_error
from tools.extras import require_bench_extra

T = TypeVar("T")

EXIT_USAGE = 2
ALGORITHM_CHOICES = ("ar", "sd", "tli", "slem", "slrs", "auto")


def _comma_list(convert: Callable[[str], T], what: str) -> Callable[[str], tuple[T, ...]]:
    def parse(text: str) -> tuple[T, ...]:
        parts = [part.strip() for part in text.split(",") if part.strip()]
        if not parts:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list of {what}, got {text!r}")
        try:
            return tuple(convert(part) for part in parts)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a comma-separated list of {what}, got {text!r}"
            ) from None

    return parse


class _CommaLists(argparse.Action):
    """A comma-list option that may be given more than once: the lists add up (``--lookahead static:8
    --lookahead disco`` is ``--lookahead static:8,disco``); the first use replaces the default."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        current = getattr(namespace, self.dest, None)
        earlier = () if current is self.default or current is None else tuple(current)
        setattr(namespace, self.dest, (*earlier, *values))


REFERENCE_CHOICES = ("ar", "assisted", "assisted-adaptive", "assisted-heuristic", "lookup")


def _reference_method(text: str) -> str:
    if text not in REFERENCE_CHOICES:
        raise ValueError(text)
    return text


def _algorithm(text: str) -> str:
    if text not in ALGORITHM_CHOICES:
        raise ValueError(text)
    return text


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``polyspec bench``."""
    parser = commands.add_parser(
        "bench",
        allow_abbrev=False,  # the parent would read ``bench load --prompt`` as a prefix of --prompts
        help="benchmark a drafter/target pair on HumanEval through the services and transformers",
        description=(
            "Start drafter, target and coordinator on 127.0.0.1, run every algorithm x temperature x "
            "HumanEval prompt through the SDK (sequential requests, batch 1; per prompt an untimed warm-up, "
            "then every configuration, in an order rotated from prompt to prompt), then stop them and run "
            "the same prompts through transformers' in-process generate (fp32: autoregressive, and with "
            "the drafter as assistant_model). Writes the JSON after every prompt (complete: false until "
            "the end), then a PNG plot, and prints a table with aggregate and paired per-prompt speedups. "
            "Greedy runs check that every output equals autoregressive decoding. An algorithm the "
            "coordinator refuses for the pair is recorded as skipped with its message."
        ),
    )
    _add_workload_flags(parser)
    _add_run_flags(parser)
    parser.set_defaults(handler=_bench, bench_parser=parser)
    _register_load(parser.add_subparsers(dest="bench_command", metavar="{load}"))


def _register_load(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``polyspec bench load``."""
    parser = commands.add_parser(
        "load",
        help="concurrent clients for a fixed time: at capacity, overloaded, with a replica stopped or killed",
        description=(
            "Start a drafter, two target replicas and a coordinator with admission caps on 127.0.0.1, then "
            "run N concurrent clients for a fixed time per run: capacity (N = --max-concurrent-requests), "
            "overload (N = --overload-factor x that), target-stop / drafter-stop (a target replica / the "
            "drafter SIGSTOPped a third into the run, SIGCONTed at two thirds) and target-kill (a target "
            "replica SIGKILLed a third into the run). Reports per run requests ok / refused "
            "(RESOURCE_EXHAUSTED) / failed, goodput, latency percentiles of ok requests, each service's "
            "peak resident memory and a greedy canary checked against its output before the first run. "
            "Writes JSON and prints a markdown table."
        ),
    )
    add = parser.add_argument
    add("--drafter", required=True, metavar="NAME_OR_DIR", help="drafter: model-store name or model folder")
    add("--target", required=True, metavar="NAME_OR_DIR", help="target of both replicas: name or folder")
    add("--duration", type=float, default=20.0, metavar="S", help="seconds per run (default: %(default)s)")
    add("--max-concurrent-requests", type=int, default=4, metavar="N", help="admission cap (default: 4)")
    add("--max-queued-requests", type=int, default=4, metavar="N", help="admission queue (default: 4)")
    add("--overload-factor", type=int, default=5, metavar="F", help="overload clients in caps (default: 5)")
    add(
        "--runs",
        type=_comma_list(_run_name, f"runs ({', '.join(RUN_CHOICES)})"),
        action=_CommaLists,
        default=RUN_CHOICES,
        metavar="LIST",
        help="comma-separated runs, always in the order above (default: all)",
    )
    add("--prompt", action="append", metavar="TEXT", help="a load prompt (repeat; the first is the canary's)")
    add("--max-new-tokens", type=int, default=32, metavar="N", help="tokens per request (default: 32)")
    add("--temperature", type=float, default=0.7, help="of the load requests (default: 0.7)")
    add("--seed", type=int, default=0, help="base seed of the load requests (default: 0)")
    add("--threads", type=int, default=1, metavar="N", help="torch threads per model service (default: 1)")
    add("--out", type=Path, metavar="PATH", help="JSON results (default: bench-results/load.json)")
    add("--startup-timeout", type=float, default=600.0, metavar="S", help="per service (default: 600)")
    _add_log_flags(parser)
    parser.set_defaults(handler=_load)


RUN_CHOICES = ("capacity", "overload", "target-stop", "drafter-stop", "target-kill")


def _run_name(text: str) -> str:
    if text not in RUN_CHOICES:
        raise ValueError(text)
    return text


def _load(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from tools.bench.load import LoadOptions, run_load_bench

    fields = {
        "drafter": args.drafter,
        "target": args.target,
        "duration_seconds": args.duration,
        "max_concurrent_requests": args.max_concurrent_requests,
        "max_queued_requests": args.max_queued_requests,
        "overload_factor": args.overload_factor,
        "runs": args.runs,
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "seed": args.seed,
        "threads": args.threads,
        "out": args.out,
        "startup_timeout_seconds": args.startup_timeout,
        "log_dir": args.log_dir,
        "log_level": args.log_level,
    }
    if args.prompt:
        fields["prompts"] = tuple(args.prompt)
    try:
        options = LoadOptions(**fields)
    except ValidationError as exc:
        print(f"error: invalid bench load settings:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    return run_load_bench(options)


def _add_workload_flags(parser: argparse.ArgumentParser) -> None:
    """Models, prompts and the configurations to measure."""
    add = parser.add_argument
    # Required, checked by the handler: ``bench load`` takes its own (argparse would ask the parent's).
    add("--drafter", metavar="NAME_OR_DIR", help="drafter: model-store name or model folder (required)")
    add("--target", metavar="NAME_OR_DIR", help="target: model-store name or model folder (required)")
    add(
        "--workload",
        choices=("humaneval", "rewrite"),
        default="humaneval",
        help="humaneval: complete each task's prompt; rewrite: each task's whole function, then write it "
        "again without its docstring (the output repeats the prompt) (default: %(default)s)",
    )
    add("--prompts", type=int, default=10, metavar="N", help="HumanEval prompts (default: %(default)s)")
    add(
        "--prompt-offset",
        type=int,
        default=0,
        metavar="I",
        help="first HumanEval task (default: %(default)s)",
    )
    add(
        "--max-new-tokens", type=int, default=64, metavar="N", help="tokens per prompt (default: %(default)s)"
    )
    add(
        "--algorithms",
        type=_comma_list(_algorithm, f"algorithms ({', '.join(ALGORITHM_CHOICES)})"),
        action=_CommaLists,
        default=("ar", "sd"),
        metavar="LIST",
        help="comma-separated, through the services; ar always runs as the baseline (default: ar,sd)",
    )
    add(
        "--temperatures",
        type=_comma_list(float, "numbers"),
        action=_CommaLists,
        default=(0.0,),
        metavar="LIST",
        help="comma-separated sampling temperatures; 0 = greedy (default: 0)",
    )
    add(
        "--lookahead",
        type=_comma_list(str, "lookahead specs"),
        action=_CommaLists,
        default=("auto",),
        metavar="LIST",
        help="comma-separated lookahead specs for the drafting algorithms: auto, K, static:K, "
        "confidence:K:THRESHOLD, disco, disco:K (the pair's trained stop classifier ends each draft, at most "
        "K tokens; plain disco: at most the draft length it was trained on), auto+disco (auto with the "
        "classifier as its stop; plain auto runs without it). The disco specs run on a second coordinator "
        "started with --disco-artifact (default: auto)",
    )
    add(
        "--disco-artifact",
        type=Path,
        metavar="PATH",
        help="the trained stop classifier of this pair (the folder `polyspec disco train` wrote), passed to "
        "the coordinator that runs disco, disco:K and auto+disco; those specs need it (default: none)",
    )
    add(
        "--lookup",
        choices=("none", "ngram", "suffix"),
        default="none",
        help="also start a model-free drafter of this kind on the target's tokenizer and run `lookup` (it "
        "alone drafts, sd) and `ALGORITHM+lookup` (asked first every round, the model drafter otherwise) "
        "for each drafting algorithm (default: none)",
    )
    add("--seed", type=int, default=0, help="prompt i runs with seed + i (default: %(default)s)")


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    """Reference, threads, the benchmarking flag, outputs and service start-up."""
    add = parser.add_argument
    add(
        "--services",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the configurations through the services (default: on; --no-services runs only the "
        "transformers reference)",
    )
    add(
        "--reference",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also run transformers' in-process generate (default: on)",
    )
    add(
        "--reference-methods",
        type=_comma_list(_reference_method, f"methods ({', '.join(REFERENCE_CHOICES)})"),
        action=_CommaLists,
        default=("ar", "assisted"),
        metavar="LIST",
        help="transformers' configurations, comma-separated: ar (generate); the drafter as assistant_model "
        "(universal assisted generation across vocabularies): assisted (transformers' defaults: 20 tokens, "
        "confidence stop 0.4, retuned online with scikit-learn), assisted-adaptive (that adaptive "
        "threshold, asked explicitly; skipped where transformers cannot adapt it: without scikit-learn or "
        "across vocabularies), assisted-heuristic (5 tokens, +2/-1 per round, no confidence stop); lookup "
        "(prompt lookup decoding). ar always runs; the table names the fastest assisted variant per "
        "temperature (default: ar,assisted)",
    )
    add(
        "--prompt-lookup-tokens",
        type=int,
        default=10,
        metavar="N",
        help="transformers' prompt lookup: prompt_lookup_num_tokens (default: %(default)s)",
    )
    add(
        "--threads",
        type=int,
        metavar="N",
        help="torch threads of each model service and of the transformers reference (default: torch's)",
    )
    add(
        "--linear-kernel",
        choices=("onednn-packed", "onednn", "torch"),
        default="onednn-packed",
        help="linear kernels of both model services (serve model --linear-kernel; the transformers "
        "reference keeps torch's) (default: %(default)s)",
    )
    add(
        "--drafter-dtype",
        choices=("float32", "bfloat16", "float16"),
        default="bfloat16",
        help="the drafter service's dtype (serve model --dtype) (default: %(default)s)",
    )
    add(
        "--target-dtype",
        choices=("float32", "bfloat16", "float16"),
        default="float32",
        help="the target service's dtype (serve model --dtype), also the transformers reference's target "
        "(default: %(default)s)",
    )
    add(
        "--drafter-quantize",
        choices=("none", "int8-dynamic", "int8-weight-only"),
        default="int8-weight-only",
        help="the drafter service's int8 linear layers (serve model --quantize; a drafter's precision "
        "changes speed and acceptance, not the output) (default: %(default)s)",
    )
    add(
        "--emulate-forward-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="BENCHMARKING FLAG: pad every forward of the target service to MS milliseconds to emulate a "
        "slower target; labelled in every output, not applied to the transformers reference (default: off)",
    )
    add(
        "--emulate-drafter-forward-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="BENCHMARKING FLAG: pad every forward of the drafter service to MS milliseconds (with "
        "--emulate-forward-ms: a fixed drafter/target cost ratio) (default: off)",
    )
    _add_dsi_flags(parser)
    add("--out", type=Path, metavar="PATH", help="JSON results (default: bench-results/DRAFTER__TARGET.json)")
    add("--plot", type=Path, metavar="PATH", help="PNG plot (default: the JSON path with .png)")
    add(
        "--startup-timeout",
        type=float,
        default=600.0,
        metavar="S",
        help="how long to wait for each service to serve (default: %(default)s)",
    )
    _add_log_flags(parser)


def _scheduler(text: str) -> str:
    if text not in ("si", "dsi"):
        raise ValueError(text)
    return text


def _add_dsi_flags(parser: argparse.ArgumentParser) -> None:
    """The DSI benchmark: target replica counts and the schedulers asked for."""
    parser.add_argument(
        "--replicas",
        type=_comma_list(int, "replica counts"),
        action=_CommaLists,
        default=(),
        metavar="LIST",
        help="run the DSI benchmark instead: one drafter and max(LIST) target replicas (each on "
        "--threads, default 1), per count N a coordinator over N of them; target-only, then the first "
        "drafting --algorithms under each --scheduler with the first --lookahead and --temperatures; "
        "tokens/s, acceptance, the simulator's prediction, overruns (a count with more than 1%% "
        "overrun forwards is rejected). "
        "Pad every forward (--emulate-forward-ms, --emulate-drafter-forward-ms) so the replicas do "
        "not compete for the cores (default: off)",
    )
    parser.add_argument(
        "--scheduler",
        type=_comma_list(_scheduler, "schedulers (si, dsi)"),
        action=_CommaLists,
        default=("si", "dsi"),
        metavar="LIST",
        help="the DSI benchmark's schedulers, passed per request; the coordinators keep si as default "
        "(default: si,dsi)",
    )


def _add_log_flags(parser: argparse.ArgumentParser) -> None:
    """Where the started services log, and how much."""
    parser.add_argument(
        "--log-dir", type=Path, metavar="DIR", help="keep the services' logs here (default: a temp dir)"
    )
    parser.add_argument(
        "--log-level",
        default="WARNING",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="log level of the services (DEBUG: the coordinator logs every round) (default: WARNING)",
    )


def _bench(args: argparse.Namespace) -> int:
    absent = [
        flag for flag, value in (("--drafter", args.drafter), ("--target", args.target)) if value is None
    ]
    if absent:
        args.bench_parser.error(f"the following arguments are required: {', '.join(absent)}")
    disco_error = missing_artifact_error(args.lookahead)
    if disco_error and args.disco_artifact is None:
        args.bench_parser.error(disco_error)
    missing = require_bench_extra("bench")
    if missing is not None:
        return missing
    from pydantic import ValidationError

    from tools.bench.dsi import run_dsi_bench
    from tools.bench.options import BenchOptions
    from tools.bench.runner import run_bench

    try:
        options = BenchOptions(
            drafter=args.drafter,
            target=args.target,
            workload=args.workload,
            prompts=args.prompts,
            prompt_offset=args.prompt_offset,
            max_new_tokens=args.max_new_tokens,
            algorithms=args.algorithms,
            temperatures=args.temperatures,
            lookup=args.lookup,
            lookaheads=args.lookahead,
            disco_artifact=args.disco_artifact,
            seed=args.seed,
            services=args.services,
            reference=args.reference,
            reference_methods=args.reference_methods,
            prompt_lookup_tokens=args.prompt_lookup_tokens,
            threads=args.threads,
            linear_kernel=args.linear_kernel,
            drafter_dtype=args.drafter_dtype,
            drafter_quantize=args.drafter_quantize,
            target_dtype=args.target_dtype,
            emulate_forward_ms=args.emulate_forward_ms,
            emulate_drafter_forward_ms=args.emulate_drafter_forward_ms,
            replicas=args.replicas,
            schedulers=args.scheduler,
            out=args.out,
            plot=args.plot,
            startup_timeout_seconds=args.startup_timeout,
            log_dir=args.log_dir,
            log_level=args.log_level,
        )
    except ValidationError as exc:
        print(f"error: invalid bench settings:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    return run_dsi_bench(options) if options.replicas else run_bench(options)
