"""``polyspec bench``: argparse only at import time; the handler imports the harness lazily."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

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


def _algorithm(text: str) -> str:
    if text not in ALGORITHM_CHOICES:
        raise ValueError(text)
    return text


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``polyspec bench``."""
    parser = commands.add_parser(
        "bench",
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
    parser.set_defaults(handler=_bench)


def _add_workload_flags(parser: argparse.ArgumentParser) -> None:
    """Models, prompts and the configurations to measure."""
    add = parser.add_argument
    add("--drafter", required=True, metavar="NAME_OR_DIR", help="drafter: model-store name or model folder")
    add("--target", required=True, metavar="NAME_OR_DIR", help="target: model-store name or model folder")
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
        default=("ar", "sd"),
        metavar="LIST",
        help="comma-separated, through the services; ar always runs as the baseline (default: ar,sd)",
    )
    add(
        "--temperatures",
        type=_comma_list(float, "numbers"),
        default=(0.0,),
        metavar="LIST",
        help="comma-separated sampling temperatures; 0 = greedy (default: 0)",
    )
    add(
        "--lookahead",
        type=_comma_list(str, "lookahead specs"),
        default=("auto",),
        metavar="LIST",
        help="comma-separated lookahead specs for the drafting algorithms: auto, K, static:K, "
        "confidence:K:THRESHOLD (default: auto)",
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
        "--emulate-forward-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="BENCHMARKING FLAG: pad every forward of the target service to MS milliseconds to emulate a "
        "slower target; labelled in every output, not applied to the transformers reference (default: off)",
    )
    add("--out", type=Path, metavar="PATH", help="JSON results (default: bench-results/DRAFTER__TARGET.json)")
    add("--plot", type=Path, metavar="PATH", help="PNG plot (default: the JSON path with .png)")
    add(
        "--startup-timeout",
        type=float,
        default=600.0,
        metavar="S",
        help="how long to wait for each service to serve (default: %(default)s)",
    )
    add("--log-dir", type=Path, metavar="DIR", help="keep the services' logs here (default: a temp dir)")
    add(
        "--log-level",
        default="WARNING",
        type=str.upper,
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="log level of the services (DEBUG: the coordinator logs every round) (default: WARNING)",
    )


def _bench(args: argparse.Namespace) -> int:
    missing = require_bench_extra("bench")
    if missing is not None:
        return missing
    from pydantic import ValidationError

    from tools.bench.options import BenchOptions
    from tools.bench.runner import run_bench

    try:
        options = BenchOptions(
            drafter=args.drafter,
            target=args.target,
            prompts=args.prompts,
            prompt_offset=args.prompt_offset,
            max_new_tokens=args.max_new_tokens,
            algorithms=args.algorithms,
            temperatures=args.temperatures,
            lookaheads=args.lookahead,
            seed=args.seed,
            services=args.services,
            reference=args.reference,
            threads=args.threads,
            linear_kernel=args.linear_kernel,
            emulate_forward_ms=args.emulate_forward_ms,
            out=args.out,
            plot=args.plot,
            startup_timeout_seconds=args.startup_timeout,
            log_dir=args.log_dir,
            log_level=args.log_level,
        )
    except ValidationError as exc:
        print(f"error: invalid bench settings:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    return run_bench(options)
