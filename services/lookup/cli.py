"""``polyspec serve drafter``: a model-free drafter (prompt lookup or suffix tree). No torch until it runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

# flag -> (settings field, type, help); every one defaults to None, leaving the field to its default
_TUNING: dict[str, tuple[str, type, str]] = {
    "--ngram-min": ("ngram_min", int, "ngram: shortest n-gram match that proposes"),
    "--ngram-max": ("ngram_max", int, "ngram: longest n-gram match, tried first"),
    "--suffix-depth": ("suffix_depth", int, "suffix: depth of the suffix tree (matches up to depth - 1)"),
    "--suffix-min-match": ("suffix_min_match", int, "suffix: shortest suffix match that proposes"),
    "--suffix-min-score": (
        "suffix_min_score",
        float,
        "suffix: stop before the draft's running continuation frequency falls under this",
    ),
    "--cross-request-memory": (
        "cross_request_memory_tokens",
        int,
        "suffix: also draft from the generated tokens of finished sequences, keeping up to this many "
        "(in memory, per replica; 0 = off)",
    ),
    "--max-draft-tokens": ("max_draft_tokens", int, "largest max_draft_tokens a request may ask"),
    "--cache-budget-tokens": ("cache_budget_tokens", int, "context tokens indexed over all sequences"),
    "--cache-ttl-seconds": ("cache_ttl_seconds", float, "drop a sequence after this idle time"),
    "--max-queue": ("max_queue", int, "pending requests before RESOURCE_EXHAUSTED"),
    "--max-token-masks": ("max_token_masks", int, "token masks (SetTokenMask) held"),
}


def register_serve(roles: Any) -> None:
    """Adds the ``drafter`` role to the ``serve`` subcommand's subparsers."""
    from core.serving.flags import add_server_flags

    parser: argparse.ArgumentParser = roles.add_parser(
        "drafter",
        help="serve a model-free drafter (prompt lookup or suffix tree) for a target's tokenizer",
        description="Serve a model-free drafter over gRPC (polyspec.v1.ModelService, Draft only): it "
        "proposes continuations looked up in the request's own tokens, with the target's tokenizer, so "
        "the coordinator runs it as a same-vocabulary drafter (sd).",
    )
    add = parser.add_argument
    add("--kind", required=True, choices=("ngram", "suffix"), help="prompt lookup (ngram) or suffix tree")
    add(
        "--target-model",
        required=True,
        type=Path,
        help="the target's local model folder (its tokenizer, vocabulary width, stop tokens, context limit)",
    )
    add("--name", help="name reported by Info (default: the kind)")
    add("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 in containers (default: %(default)s)")
    add("--port", type=int, default=50053, help="gRPC port; 0 picks a free one (default: %(default)s)")
    add("--port-file", type=Path, help="write the bound port to this file once serving")
    add("--metrics-port", type=int, help="Prometheus /metrics port (default: off)")
    for flag, (field, kind, text) in _TUNING.items():
        add(flag, type=kind, help=f"{text} {_default(field)}")
    add_server_flags(parser.add_argument_group("transport"))
    parser.set_defaults(handler=_serve_drafter)


def _default(field: str) -> str:
    from services.lookup.settings import LookupServiceSettings

    return f"(default: {LookupServiceSettings.model_fields[field].default})"


def settings_fields(args: argparse.Namespace) -> dict[str, Any]:
    """Settings fields from the arguments; unset options keep the settings' defaults."""
    from core.serving.flags import server_fields

    fields: dict[str, Any] = {
        field: getattr(args, flag.removeprefix("--").replace("-", "_"))
        for flag, (field, _, _) in _TUNING.items()
    }
    fields = {key: value for key, value in fields.items() if value is not None}
    fields.update(kind=args.kind, target_model_dir=args.target_model, metrics_port=args.metrics_port)
    if args.name:
        fields["model_name"] = args.name
    fields["grpc"] = {"host": args.host, "port": args.port, **server_fields(args)}
    if args.metrics_port is not None:
        fields["metrics_host"] = args.host
    return fields


def _serve_drafter(args: argparse.Namespace) -> int:
    import asyncio

    from services.lookup.settings import LookupServiceSettings

    try:
        settings = LookupServiceSettings.model_validate(settings_fields(args))
    except ValueError as exc:  # pydantic's ValidationError, or TLS flags given by halves
        print(f"polyspec serve drafter: invalid settings:\n{exc}", file=sys.stderr)
        return 2
    if not settings.target_model_dir.is_dir():
        print(
            f"polyspec serve drafter: --target-model {settings.target_model_dir} is not a folder",
            file=sys.stderr,
        )
        return 2
    from core.serving.server import exit_after_drain
    from core.serving.tls import TLSFileError
    from services.lookup.server import run

    try:
        asyncio.run(run(settings, args.port_file))
    except TLSFileError as exc:
        print(f"polyspec serve drafter: {exc}", file=sys.stderr)
        return 2
    exit_after_drain()
