"""``polyspec serve coordinator``: its flags and the settings they make.

Only argparse at import time; the settings model is imported when the parser is built, the server when the
command runs. Every flag that sets a settings field takes its help text, type and the default --help shows
from that field (``SETTINGS_FLAGS``); an unset flag keeps the field's default.
"""

from __future__ import annotations

import argparse
import enum
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Union, get_args, get_origin

if TYPE_CHECKING:
    from pydantic import BaseModel
    from pydantic.fields import FieldInfo

    from coordinator.config import CoordinatorSettings

DEFAULT_PORT = 50051
Group = Literal["model services", "server", "request defaults and limits"]  # --help sections, in order


@dataclass(frozen=True)
class SettingsFlag:
    """A flag that sets one settings field: ``CoordinatorSettings.FIELD`` (``.grpc.FIELD`` when ``grpc``)."""

    flag: str
    field: str
    metavar: str
    group: Group
    grpc: bool = False
    help: str | None = None  # None: the field's description
    unset: str = "off"  # what an unset field (default None) means, in --help

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")


SETTINGS_FLAGS: tuple[SettingsFlag, ...] = (
    SettingsFlag("--target-dns-interval", "dns_interval_seconds", "SECONDS", "model services"),
    SettingsFlag(
        "--drafter-tokenizer-fingerprint",
        "drafter_tokenizer_fingerprint",
        "SHA256",
        "model services",
        help="refuse to start if the drafter serves a tokenizer with another sha256 fingerprint",
    ),
    SettingsFlag(
        "--target-tokenizer-fingerprint",
        "target_tokenizer_fingerprint",
        "SHA256",
        "model services",
        help="refuse to start if the target serves a tokenizer with another sha256 fingerprint",
    ),
    SettingsFlag(
        "--model-max-message-bytes",
        "max_message_bytes",
        "N",
        "model services",
        help="cap on one message to or from a model service",
    ),
    SettingsFlag("--host", "host", "HOST", "server", grpc=True),
    SettingsFlag("--metrics-host", "metrics_host", "HOST", "server"),
    SettingsFlag(
        "--metrics-port", "metrics_port", "PORT", "server", help="Prometheus /metrics port; 0 picks one"
    ),
    SettingsFlag(
        "--shutdown-grace",
        "shutdown_grace_seconds",
        "S",
        "server",
        grpc=True,
        help="seconds in-flight calls get after SIGTERM",
    ),
    SettingsFlag("--scheduler", "default_scheduler", "NAME", "request defaults and limits"),
    SettingsFlag("--lookahead-k", "default_lookahead_k", "K", "request defaults and limits"),
    SettingsFlag("--max-lookahead-k", "max_lookahead_k", "K", "request defaults and limits"),
    SettingsFlag(
        "--confidence-threshold", "default_confidence_threshold", "P", "request defaults and limits"
    ),
    SettingsFlag(
        "--auto-confidence-threshold", "auto_confidence_threshold", "P", "request defaults and limits"
    ),
    SettingsFlag("--disco-artifact", "disco_artifact", "PATH|auto", "request defaults and limits"),
    SettingsFlag("--disco-artifact-dir", "disco_artifact_dir", "DIR", "request defaults and limits"),
    SettingsFlag("--max-support", "max_support", "N", "request defaults and limits"),
    SettingsFlag("--max-new-tokens-cap", "max_new_tokens_cap", "N", "request defaults and limits"),
    SettingsFlag("--max-prompt-bytes", "max_prompt_bytes", "N", "request defaults and limits"),
    SettingsFlag("--max-prompt-tokens", "max_prompt_tokens", "N", "request defaults and limits"),
    SettingsFlag(
        "--near-tie-logit-margin",
        "near_tie_logit_margin",
        "LOGITS",
        "request defaults and limits",
        unset="by the target's precision",
    ),
    SettingsFlag("--max-concurrent-requests", "max_concurrent_requests", "N", "request defaults and limits"),
    SettingsFlag("--max-queued-requests", "max_queued_requests", "N", "request defaults and limits"),
    SettingsFlag("--call-timeout", "call_timeout_seconds", "S", "model services"),
    SettingsFlag("--call-timeout-factor", "call_timeout_factor", "X", "model services"),
    SettingsFlag("--min-call-timeout", "min_call_timeout_seconds", "S", "model services"),
    SettingsFlag("--eject-after-failures", "eject_after_failures", "N", "model services"),
    SettingsFlag("--ejection-seconds", "ejection_seconds", "S", "model services"),
    SettingsFlag("--call-retry", "call_retry_seconds", "S", "model services"),
    SettingsFlag("--startup-timeout", "startup_timeout_seconds", "S", "request defaults and limits"),
)


def register_serve(roles: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``polyspec serve coordinator``."""
    from coordinator.config import CoordinatorSettings
    from core.serving.flags import add_client_tls_flags, add_server_flags
    from core.serving.server import GrpcServerSettings

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
    groups = {name: parser.add_argument_group(name) for name in get_args(Group)}
    services = groups["model services"]
    services.add_argument("--drafter", metavar="ADDR", help="host:port of the drafter service (optional)")
    services.add_argument(
        "--lookup-drafter",
        metavar="ADDR",
        help="host:port of a model-free drafter (serve drafter --kind ngram|suffix) asked first every "
        "round; its draft is used where the cost model expects it to pay more than the model drafter's "
        "(optional; works without --drafter too)",
    )
    services.add_argument(
        "--target",
        metavar="ADDR[,ADDR...]",
        action="append",
        required=True,
        help="host:port of each target replica (comma-separated or repeated), or live discovery: "
        "dns:///NAME:PORT (a headless Service's records) or kubernetes:///SERVICE.NAMESPACE:PORT "
        "(its EndpointSlices)",
    )
    groups["server"].add_argument(
        "--port", type=int, default=DEFAULT_PORT, help="gRPC port; 0 picks a free one (default: %(default)s)"
    )
    groups["server"].add_argument(
        "--port-file", type=Path, metavar="PATH", help="write the bound port here once serving"
    )
    add_server_flags(groups["server"])
    token = groups["server"].add_mutually_exclusive_group()
    token.add_argument(
        "--auth-token-file",
        type=Path,
        metavar="PATH",
        help="require the bearer token in this file on every call (health and reflection stay open)",
    )
    token.add_argument(
        "--auth-token-env", metavar="VAR", help="require the bearer token this environment variable holds"
    )
    add_client_tls_flags(services, "model-tls", "model services")
    for spec in SETTINGS_FLAGS:
        model: type[BaseModel] = GrpcServerSettings if spec.grpc else CoordinatorSettings
        info = model.model_fields[spec.field]
        groups[spec.group].add_argument(
            spec.flag, metavar=spec.metavar, **field_flag(info, spec.help, spec.unset)
        )
    parser.set_defaults(handler=_serve_coordinator)


def field_flag(info: FieldInfo, help_text: str | None = None, unset: str = "off") -> dict[str, Any]:
    """``add_argument`` keywords for a flag that sets a pydantic field.

    The help is ``help_text`` (else the field's description) with the field's default; the type (or the
    choices of a ``Literal``) is the field's annotation, ``None`` left out. The flag's own default is
    None, so that an unset flag leaves the field to its default.
    """
    text = help_text or info.description
    if not text or info.is_required() or info.default_factory is not None:
        raise TypeError(f"field {info!r}: a flag needs a description and a plain default")
    if help_text is None and text[1:2].islower():  # "Draft tokens ..." -> "draft tokens ..." as elsewhere
        text = text[0].lower() + text[1:]
    shown = unset if info.default is None else info.default
    if isinstance(shown, enum.Enum):
        shown = shown.value
    help_line = f"{text.rstrip('.')} (default: {shown})".replace("%", "%%")
    return {"help": help_line, "default": None, **_value_type(info.annotation)}


def _value_type(annotation: Any) -> dict[str, Any]:
    """``type=`` (or ``choices=``) for a field annotation: int, float, str, Path, a Literal, an Enum (its
    values) or a Path or Literal (its words, else a path), each optional."""
    members = [annotation]
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
    words = [word for a in members if get_origin(a) is Literal for word in get_args(a)]
    if len(members) == 2 and Path in members and words:
        return {"type": PathOrWord(tuple(words))}
    if len(members) == 1 and get_origin(members[0]) is Literal:
        return {"choices": get_args(members[0])}
    if len(members) == 1 and isinstance(members[0], type) and issubclass(members[0], enum.Enum):
        return {"choices": tuple(member.value for member in members[0])}  # pydantic takes the value
    if len(members) == 1 and members[0] in (int, float, str, Path):
        return {"type": members[0]}
    raise TypeError(f"no command-line type for a field of type {annotation!r}")


@dataclass(frozen=True)
class PathOrWord:
    """An argparse ``type``: one of ``words`` as given, any other text as a Path."""

    words: tuple[str, ...]

    def __call__(self, text: str) -> str | Path:
        return text if text in self.words else Path(text)


def settings_from_args(args: argparse.Namespace) -> CoordinatorSettings:
    """The validated ``CoordinatorSettings`` for ``serve coordinator`` flags (pydantic errors propagate)."""
    from coordinator.config import CoordinatorSettings
    from core.serving.flags import client_tls, server_fields
    from core.serving.server import GrpcServerSettings

    grpc_fields: dict[str, Any] = {"port": args.port, **server_fields(args)}
    targets = tuple(part.strip() for value in args.target for part in value.split(",") if part.strip())
    fields: dict[str, Any] = {
        "drafter_address": args.drafter,
        "lookup_drafter_address": args.lookup_drafter,
        "model_tls": client_tls(args, "model-tls"),
        "auth_token_file": args.auth_token_file,
        "auth_token_env": args.auth_token_env,
    }
    discovery = [t for t in targets if "://" in t]
    if discovery and len(targets) == 1:
        fields["target_discovery"] = discovery[0]
    else:
        fields["target_addresses"] = targets  # a mix of forms fails validation with a clear message
    for spec in SETTINGS_FLAGS:
        value = getattr(args, spec.dest)
        if value is not None:
            (grpc_fields if spec.grpc else fields)[spec.field] = value
    return CoordinatorSettings(grpc=GrpcServerSettings(**grpc_fields), **fields)


def _serve_coordinator(args: argparse.Namespace) -> int:
    try:
        settings = settings_from_args(args)
    except ValueError as exc:  # pydantic's ValidationError included
        print(f"error: invalid coordinator settings:\n{exc}", file=sys.stderr)
        return 2
    from coordinator import server
    from core.serving.auth import TokenError
    from core.serving.server import exit_after_drain
    from core.serving.tls import TLSFileError

    try:
        server.run(settings, args.port_file)
    except (TokenError, TLSFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    exit_after_drain()
