"""``polyspec serve model``: the model service (drafter or target). Imports no torch until it runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

MiB = 1024 * 1024


def register_serve(roles: Any) -> None:
    """Adds the ``model`` role to the ``serve`` subcommand's subparsers."""
    parser: argparse.ArgumentParser = roles.add_parser(
        "model",
        help="serve one causal LM as a drafter or target (polyspec.v1.ModelService)",
        description="Serve a local transformers causal LM over gRPC (polyspec.v1.ModelService).",
    )
    parser.add_argument("--model", required=True, type=Path, help="local transformers model folder")
    parser.add_argument("--name", help="model name reported by Info (default: the folder name)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 in containers)")
    parser.add_argument("--port", type=int, default=50052, help="gRPC port (0 picks a free one)")
    parser.add_argument("--port-file", type=Path, help="write the bound port to this file once serving")
    parser.add_argument("--metrics-port", type=int, help="Prometheus /metrics port (default: no endpoint)")
    parser.add_argument("--device", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], help="weight dtype")
    parser.add_argument("--cache-budget-mib", type=float, help="memory budget of all KV caches in MiB")
    parser.add_argument(
        "--cache-ttl-seconds", type=float, help="drop a sequence's cache after this idle time"
    )
    parser.add_argument("--max-draft-tokens", type=int, help="largest max_draft_tokens a request may ask")
    parser.add_argument("--max-support", type=int, help="default draft support size (max_support = 0)")
    parser.add_argument("--max-queue", type=int, help="pending requests before RESOURCE_EXHAUSTED")
    parser.add_argument(
        "--max-token-masks", type=int, help="token masks (SetTokenMask) held, least recently used dropped"
    )
    parser.add_argument("--threads", type=int, help="torch intra-op threads")
    parser.add_argument(
        "--linear-kernel",
        choices=("onednn", "onednn-packed", "torch"),
        help="linear layers of fp32 CPU models: onednn (default), onednn-packed (faster verification, "
        "twice the weights' memory) or torch",
    )
    parser.add_argument(
        "--emulate-forward-ms",
        type=float,
        help="BENCHMARKING FLAG: pad every forward to this many milliseconds to emulate a slower model; "
        "reported in Info, ForwardStats and metrics",
    )
    parser.set_defaults(handler=_serve_model)


def _settings_fields(args: argparse.Namespace) -> dict[str, Any]:
    """Settings fields from the arguments; unset options keep the settings' defaults."""
    optional: dict[str, Any] = {
        "model_name": args.name,
        "device": args.device,
        "dtype": args.dtype,
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
    fields["grpc"] = {"host": args.host, "port": args.port}
    if args.metrics_port is not None:
        fields["metrics_host"] = args.host
    return fields


def _serve_model(args: argparse.Namespace) -> int:
    import asyncio

    from pydantic import ValidationError

    from services.model.settings import ModelServiceSettings

    try:
        settings = ModelServiceSettings.model_validate(_settings_fields(args))
    except ValidationError as exc:
        print(f"polyspec serve model: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    if not settings.model_dir.is_dir():
        print(f"polyspec serve model: --model {settings.model_dir} is not a folder", file=sys.stderr)
        return 2
    from core.serving.server import exit_after_drain
    from services.model.server import run

    asyncio.run(run(settings, args.port_file))
    exit_after_drain()
