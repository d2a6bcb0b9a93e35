"""Coordinator-side commands: ``polyspec serve coordinator``, ``polyspec generate`` and ``polyspec demo``.

Only argparse at import time; handlers import the server, the SDK and the demo lazily.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from polyspec import GenerationResult, Lookahead

    from coordinator.config import CoordinatorSettings

DEFAULT_PORT = 50051
DEFAULT_COORDINATOR = f"localhost:{DEFAULT_PORT}"
ALGORITHM_CHOICES = ("auto", "ar", "sd", "slem", "slrs", "tli")

# Optional ``serve coordinator`` flags -> (CoordinatorSettings field, its default as --help shows it).
# Unset flags keep the settings' own defaults (a unit test keeps the numbers here in sync with them).
SETTINGS_FLAGS: dict[str, tuple[str, object]] = {
    "lookahead_k": ("default_lookahead_k", 5),
    "max_lookahead_k": ("max_lookahead_k", 16),
    "confidence_threshold": ("default_confidence_threshold", 0.4),
    "auto_confidence_threshold": ("auto_confidence_threshold", 0.6),
    "max_support": ("max_support", 0),
    "max_new_tokens_cap": ("max_new_tokens_cap", 4096),
    "call_timeout": ("call_timeout_seconds", 60.0),
    "startup_timeout": ("startup_timeout_seconds", 120.0),
    "drafter_tokenizer_fingerprint": ("drafter_tokenizer_fingerprint", None),
    "target_tokenizer_fingerprint": ("target_tokenizer_fingerprint", None),
    "metrics_host": ("metrics_host", "127.0.0.1"),
    "metrics_port": ("metrics_port", None),
}


def _default(flag: str) -> str:
    return f"(default: {SETTINGS_FLAGS[flag][1]})"


def register_serve(roles: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``polyspec serve coordinator``."""
    parser = roles.add_parser(
        "coordinator",
        help="run the coordinator (speculative decoding between a drafter and target services)",
        description=(
            "Serve polyspec.v1.CoordinatorService: run speculative decoding between a drafter service and "
            "one or more target services (each started with `polyspec serve model`). Without --drafter "
            "every request runs target-only decoding. Starts serving once the model services answer; "
            "drains and stops on SIGTERM/SIGINT."
        ),
    )
    services = parser.add_argument_group("model services")
    services.add_argument("--drafter", metavar="ADDR", help="host:port of the drafter service (optional)")
    services.add_argument(
        "--target",
        metavar="ADDR[,ADDR...]",
        action="append",
        required=True,
        help="host:port of each target replica (comma-separated or repeated), or live discovery: "
        "dns:///NAME:PORT (a headless Service's records) or kubernetes:///SERVICE.NAMESPACE:PORT "
        "(its EndpointSlices)",
    )
    services.add_argument(
        "--target-dns-interval",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="polling interval of dns:/// target discovery",
    )
    for role in ("drafter", "target"):
        services.add_argument(
            f"--{role}-tokenizer-fingerprint",
            metavar="SHA256",
            help=f"refuse to start if the {role} serves a tokenizer with another sha256 fingerprint",
        )
    _add_server_flags(parser)
    _add_limit_flags(parser)
    parser.set_defaults(handler=_serve_coordinator)


def _add_server_flags(parser: argparse.ArgumentParser) -> None:
    server = parser.add_argument_group("server")
    server.add_argument(
        "--host", default="127.0.0.1", help="address to bind; 0.0.0.0 in containers (default: %(default)s)"
    )
    server.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="gRPC port; 0 picks a free one (default: %(default)s)"
    )
    server.add_argument(
        "--port-file", type=Path, metavar="PATH", help="write the bound port here once serving"
    )
    server.add_argument(
        "--metrics-host", metavar="HOST", help=f"Prometheus address {_default('metrics_host')}"
    )
    server.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="Prometheus /metrics port; 0 picks one (default: off)",
    )
    server.add_argument(
        "--shutdown-grace",
        type=float,
        metavar="S",
        help="seconds in-flight calls get after SIGTERM (default: 10)",
    )


def _add_limit_flags(parser: argparse.ArgumentParser) -> None:
    limits = parser.add_argument_group("request defaults and limits")
    add = limits.add_argument
    add("--lookahead-k", type=int, metavar="K", help=f"draft tokens per round {_default('lookahead_k')}")
    add(
        "--max-lookahead-k",
        type=int,
        metavar="K",
        help=f"largest k a request may ask {_default('max_lookahead_k')}",
    )
    add(
        "--confidence-threshold",
        type=float,
        metavar="P",
        help=f"threshold of the confidence lookahead {_default('confidence_threshold')}",
    )
    add(
        "--auto-confidence-threshold",
        type=float,
        metavar="P",
        help="auto lookahead across vocabularies: the drafter stops after a draft token it gives less "
        f"than P; 0 never stops early {_default('auto_confidence_threshold')}",
    )
    add(
        "--max-support",
        type=int,
        metavar="N",
        help="support cap of each shipped draft distribution; 0 = the drafter's default (default: 0)",
    )
    add(
        "--max-new-tokens-cap",
        type=int,
        metavar="N",
        help=f"largest max_new_tokens a request may ask {_default('max_new_tokens_cap')}",
    )
    add(
        "--call-timeout",
        type=float,
        metavar="S",
        help=f"bound of one model-service call {_default('call_timeout')}",
    )
    add(
        "--startup-timeout",
        type=float,
        metavar="S",
        help=f"how long to wait for the model services at start {_default('startup_timeout')}",
    )


def settings_from_args(args: argparse.Namespace) -> CoordinatorSettings:
    """The validated ``CoordinatorSettings`` for ``serve coordinator`` flags (pydantic errors propagate)."""
    from coordinator.config import CoordinatorSettings
    from core.serving.server import GrpcServerSettings

    grpc_fields: dict[str, Any] = {"host": args.host, "port": args.port}
    if args.shutdown_grace is not None:
        grpc_fields["shutdown_grace_seconds"] = args.shutdown_grace
    targets = tuple(part.strip() for value in args.target for part in value.split(",") if part.strip())
    fields: dict[str, Any] = {
        "drafter_address": args.drafter,
        "grpc": GrpcServerSettings(**grpc_fields),
        "dns_interval_seconds": args.target_dns_interval,
    }
    discovery = [t for t in targets if "://" in t]
    if discovery and len(targets) == 1:
        fields["target_discovery"] = discovery[0]
    else:
        fields["target_addresses"] = targets  # a mix of forms fails validation with a clear message
    for flag, (field, _) in SETTINGS_FLAGS.items():
        value = getattr(args, flag)
        if value is not None:
            fields[field] = value
    return CoordinatorSettings(**fields)


def _serve_coordinator(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        print(f"error: invalid coordinator settings:\n{exc}", file=sys.stderr)
        return 2
    from coordinator import server
    from core.serving.server import exit_after_drain

    server.run(settings, args.port_file)
    exit_after_drain()


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
        f"lookahead={stats.lookahead or '-'}",
        f"tokens={stats.output_tokens}",
        f"acceptance={stats.acceptance_rate:.2f}",
        f"target_forwards={stats.target_forwards}",
        f"ttft={stats.time_to_first_token_seconds:.3f}s",
        f"tokens/s={stats.tokens_per_second:.2f}",
        f"finish={result.finish_reason}",
        f"seed={stats.seed}",
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
    from coordinator.demo import DemoOptions, run_demo

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
        startup_timeout_seconds=args.startup_timeout,
        log_dir=args.log_dir,
        log_level=args.log_level,
    )
    return run_demo(options)
