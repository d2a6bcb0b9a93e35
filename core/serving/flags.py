"""Command-line flags of the gRPC transport, shared by ``serve model`` and ``serve coordinator``.

``add_server_flags`` adds the server's TLS, health port, message cap and connection-age flags;
``server_fields`` turns them into ``GrpcServerSettings`` fields (unset flags keep the defaults).
``add_client_tls_flags`` / ``client_tls`` do the same for a channel's TLS. Imports only argparse
and the settings models.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from core.serving.server import GrpcServerSettings
from core.serving.tls import ClientTLS, ServerTLS

MILLIS = 1000


def _default_ms(field: str, unset: str) -> str:
    value = GrpcServerSettings.model_fields[field].default
    return f"(default: {unset})" if value is None else f"(default: {value / MILLIS:g})"


def add_server_flags(group: argparse._ArgumentGroup | argparse.ArgumentParser) -> None:
    """TLS (``--tls-cert/--tls-key``, ``--tls-client-ca`` for mutual TLS), ``--health-port``, caps, age."""
    add = group.add_argument
    add("--tls-cert", type=Path, metavar="PEM", help="serve TLS with this certificate chain (tls.crt)")
    add("--tls-key", type=Path, metavar="PEM", help="private key of --tls-cert (tls.key)")
    add(
        "--tls-client-ca",
        type=Path,
        metavar="PEM",
        help="mutual TLS: require client certificates signed by this CA bundle (ca.crt)",
    )
    add(
        "--health-port",
        type=int,
        metavar="PORT",
        help="also serve grpc.health.v1 alone, in plaintext, on this port (kubelet gRPC probes cannot "
        "speak TLS); 0 picks one (default: off)",
    )
    cap = GrpcServerSettings.model_fields["max_message_bytes"].default
    add("--max-message-bytes", type=int, metavar="N", help=f"cap on one message, both ways (default: {cap})")
    add(
        "--max-connection-age",
        type=float,
        metavar="S",
        help="ask clients to reconnect after a connection lived this long, to rebalance; 0 = no limit "
        + _default_ms("max_connection_age_ms", "off"),
    )
    add(
        "--max-connection-age-grace",
        type=float,
        metavar="S",
        help="how long calls still running on an aged connection may go on before they are cut "
        + _default_ms("max_connection_age_grace_ms", "unlimited: the age limit never cuts a live call"),
    )


def server_tls(args: argparse.Namespace) -> ServerTLS | None:
    """The server TLS the flags ask for (pydantic errors name the missing file)."""
    if args.tls_cert is None and args.tls_key is None and args.tls_client_ca is None:
        return None
    if args.tls_cert is None or args.tls_key is None:
        raise ValueError("--tls-cert and --tls-key go together (--tls-client-ca needs both)")
    return ServerTLS(cert_file=args.tls_cert, key_file=args.tls_key, client_ca_file=args.tls_client_ca)


def server_fields(args: argparse.Namespace) -> dict[str, Any]:
    """``GrpcServerSettings`` fields from ``add_server_flags``' flags; unset flags are left out."""
    fields: dict[str, Any] = {}
    tls = server_tls(args)
    if tls is not None:
        fields["tls"] = tls
    if args.health_port is not None:
        fields["health_port"] = args.health_port
    if args.max_message_bytes is not None:
        fields["max_message_bytes"] = args.max_message_bytes
    if args.max_connection_age is not None:
        fields["max_connection_age_ms"] = round(args.max_connection_age * MILLIS)
    if args.max_connection_age_grace is not None:
        fields["max_connection_age_grace_ms"] = round(args.max_connection_age_grace * MILLIS)
    return fields


def add_client_tls_flags(
    group: argparse._ArgumentGroup | argparse.ArgumentParser, prefix: str, peer: str
) -> None:
    """``--PREFIX`` (TLS on), ``--PREFIX-ca``, ``--PREFIX-cert/-key`` (mutual TLS), ``--PREFIX-server-name``.

    ``peer`` names the servers in the help texts (plural).
    """
    add = group.add_argument
    add(
        f"--{prefix}",
        action="store_true",
        help=f"talk TLS to the {peer} (the system's CAs unless --{prefix}-ca)",
    )
    add(f"--{prefix}-ca", type=Path, metavar="PEM", help=f"CA bundle the {peer}' certificates must chain to")
    add(
        f"--{prefix}-cert",
        type=Path,
        metavar="PEM",
        help=f"client certificate for {peer} that require mutual TLS",
    )
    add(f"--{prefix}-key", type=Path, metavar="PEM", help=f"private key of --{prefix}-cert")
    add(
        f"--{prefix}-server-name",
        metavar="NAME",
        help=f"check the {peer}' certificates for this name instead of the address's host "
        "(replicas reached by IP)",
    )


def client_tls(args: argparse.Namespace, prefix: str) -> ClientTLS | None:
    """The ``ClientTLS`` of ``add_client_tls_flags``' flags; None when none of them is given."""
    dest = prefix.replace("-", "_")
    values = {
        "ca_file": getattr(args, f"{dest}_ca"),
        "cert_file": getattr(args, f"{dest}_cert"),
        "key_file": getattr(args, f"{dest}_key"),
        "server_name": getattr(args, f"{dest}_server_name"),
    }
    if not getattr(args, dest) and all(value is None for value in values.values()):
        return None
    return ClientTLS(**values)
