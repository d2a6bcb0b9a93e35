"""``polyspec serve model``: the model service (drafter or target). Imports no torch until it runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, get_args

MiB = 1024 * 1024


def register_serve(roles: Any) -> None:
    """Adds the ``model`` role to the ``serve`` subcommand's subparsers.

    The defaults --help shows come from ``ModelServiceSettings``; every settings flag defaults to None, so
    that an unset flag leaves the field to the settings' default.
    """
    from core.serving.flags import add_server_flags
    from services.model.settings import DType, LinearKernel, Quantize

    parser: argparse.ArgumentParser = roles.add_parser(
        "model",
        help="serve one causal LM as a drafter or target (polyspec.v1.ModelService)",
        description="Serve a local transformers causal LM over gRPC (polyspec.v1.ModelService).",
    )
    add = parser.add_argument
    add("--model", required=True, type=Path, help="local transformers model folder")
    add("--name", help="model name reported by Info (default: the folder name)")
    add("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 in containers (default: %(default)s)")
    add("--port", type=int, default=50052, help="gRPC port; 0 picks a free one (default: %(default)s)")
    add("--port-file", type=Path, help="write the bound port to this file once serving")
    add("--metrics-port", type=int, help=f"Prometheus /metrics port {_default('metrics_port')}")
    add("--device", help=f"cpu, cuda or cuda:N {_default('device')}")
    add("--dtype", choices=get_args(DType), help=f"weight (compute) dtype {_default('dtype')}")
    add(
        "--quantize",
        choices=get_args(Quantize),
        help="int8 linear layers on the cpu (drafters: speed and acceptance change, the output law does "
        "not): int8-dynamic computes in float32, int8-weight-only in bfloat16 or float32 "
        f"{_default('quantize')}",
    )
    add(
        "--cache-budget-mib",
        type=float,
        help=f"memory budget of all KV caches in MiB {_default('cache_budget_bytes', MiB)}",
    )
    add(
        "--cache-ttl-seconds",
        type=float,
        help=f"drop a sequence's cache after this idle time {_default('cache_ttl_seconds')}",
    )
    add(
        "--max-draft-tokens",
        type=int,
        help=f"largest max_draft_tokens a request may ask {_default('max_draft_tokens')}",
    )
    add(
        "--max-support",
        type=int,
        help=f"draft support size when a request says 0 {_default('default_max_support')}",
    )
    add("--max-queue", type=int, help=f"pending requests before RESOURCE_EXHAUSTED {_default('max_queue')}")
    add(
        "--max-token-masks",
        type=int,
        help=f"token masks (SetTokenMask) held, least recently used dropped {_default('max_token_masks')}",
    )
    add("--threads", type=int, help=f"torch intra-op threads {_default('torch_threads', unset='torch')}")
    add(
        "--linear-kernel",
        choices=get_args(LinearKernel),
        help="linear layers of fp32 CPU models: onednn-packed is faster at verification and holds the "
        f"weights twice {_default('linear_kernel')}",
    )
    add(
        "--emulate-forward-ms",
        type=float,
        help="BENCHMARKING FLAG: pad every forward to this many milliseconds to emulate a slower model; "
        f"reported in Info, ForwardStats and metrics {_default('emulated_forward_seconds', 1e-3)}",
    )
    add_server_flags(parser.add_argument_group("transport"))
    parser.set_defaults(handler=_serve_model)


def _default(field: str, unit: float = 1, unset: str = "off") -> str:
    """``(default: X)``: the ``ModelServiceSettings`` field's default, in the flag's unit (``unit`` of it)."""
    from services.model.settings import ModelServiceSettings

    value = ModelServiceSettings.model_fields[field].default
    if value is None:
        return f"(default: {unset})"
    if unit != 1:
        value = f"{value / unit:g}"
    return f"(default: {value})"


def _settings_fields(args: argparse.Namespace) -> dict[str, Any]:
    """Settings fields from the arguments; unset options keep the settings' defaults."""
    from core.serving.flags import server_fields

    optional: dict[str, Any] = {
        "model_name": args.name,
        "device": args.device,
        "dtype": args.dtype,
        "quantize": args.quantize,
        "cache_budget_bytes": None if args.cache_budget_mib is None else int(args.cache_budget_mib * MiB),
        "cache_ttl_seconds": args.cache_ttl_seconds,
        "max_draft_tokens": args.max_draft_tokens,
        "default_max_support": args.max_support,
        "max_queue": args.max_queue,
        "max_token_masks": args.max_token_masks,
        "torch_threads": args.threads,
        "linear_kernel": args.linear_kernel,
        "metrics_port": args.metrics_port,
        "emulated_forward_seconds": None
        if args.emulate_forward_ms is None
        else args.emulate_forward_ms / 1000,
    }
    fields = {key: value for key, value in optional.items() if value is not None}
    fields["model_dir"] = args.model
    fields["grpc"] = {"host": args.host, "port": args.port, **server_fields(args)}
    if args.metrics_port is not None:
        fields["metrics_host"] = args.host
    return fields


def _serve_model(args: argparse.Namespace) -> int:
    import asyncio

    from services.model.settings import ModelServiceSettings

    try:
        settings = ModelServiceSettings.model_validate(_settings_fields(args))
    except ValueError as exc:  # pydantic's ValidationError, or TLS flags given by halves
        print(f"polyspec serve model: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    if not settings.model_dir.is_dir():
        print(f"polyspec serve model: --model {settings.model_dir} is not a folder", file=sys.stderr)
        return 2
    from core.serving.server import exit_after_drain
    from core.serving.tls import TLSFileError
    from services.model.server import run

    try:
        asyncio.run(run(settings, args.port_file))
    except TLSFileError as exc:
        print(f"polyspec serve model: {exc}", file=sys.stderr)
        return 2
    exit_after_drain()
