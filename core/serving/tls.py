"""TLS for the gRPC servers and the channels between services, from PEM certificate files.

A server with ``ServerTLS`` serves TLS with its certificate and key; with ``client_ca_file`` it also
asks every client for a certificate signed by that CA and refuses the handshake without one (mutual
TLS). A channel with ``ClientTLS`` checks the server's certificate against ``ca_file`` (the system's
roots when unset), presents ``cert_file``/``key_file`` when given (for servers that require mutual
TLS) and, with ``server_name``, checks the certificate for that name instead of the address's host
(replicas reached by IP). The file names follow cert-manager's Secrets (``tls.crt``, ``tls.key``,
``ca.crt``) but any PEM files do. Files are read once, when the server starts or the channel opens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

import grpc
from pydantic import BaseModel, ConfigDict, Field, model_validator

MiB = 1024 * 1024


class TLSFileError(ValueError):
    """A certificate or key file cannot be read (names the file and the setting)."""


class ServerTLS(BaseModel):
    """The certificate a server presents; with a client CA, mutual TLS (client certificates required)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    cert_file: Path = Field(description="PEM certificate chain of the server (tls.crt).")
    key_file: Path = Field(description="PEM private key of the server (tls.key).")
    client_ca_file: Path | None = Field(
        None, description="PEM CA bundle (ca.crt); set: clients must present a certificate it signed."
    )

    @property
    def mutual(self) -> bool:
        return self.client_ca_file is not None


class ClientTLS(BaseModel):
    """How a channel checks the server and, for mutual TLS, which certificate it presents."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ca_file: Path | None = Field(None, description="PEM CA bundle the server's certificate must chain to.")
    cert_file: Path | None = Field(None, description="PEM client certificate (mutual TLS).")
    key_file: Path | None = Field(None, description="PEM private key of the client certificate.")
    server_name: str | None = Field(
        None, min_length=1, description="Name the server's certificate must carry (default: the host)."
    )

    @model_validator(mode="after")
    def _pair(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("a client certificate needs both cert_file and key_file")
        return self


def read_pem(path: Path, setting: str) -> bytes:
    """The bytes of a PEM file; a missing or unreadable file raises ``TLSFileError`` naming ``setting``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TLSFileError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise TLSFileError(f"{setting}: {path} is not a PEM file")
    return data


def server_credentials(tls: ServerTLS) -> grpc.ServerCredentials:
    """Server credentials; mutual TLS (``require_client_auth``) when a client CA is set."""
    pair = (read_pem(tls.key_file, "tls key_file"), read_pem(tls.cert_file, "tls cert_file"))
    client_ca = None if tls.client_ca_file is None else read_pem(tls.client_ca_file, "tls client_ca_file")
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def channel_credentials(tls: ClientTLS) -> grpc.ChannelCredentials:
    """Channel credentials: the CA to trust (system roots when unset) and the client certificate, if any."""
    ca = None if tls.ca_file is None else read_pem(tls.ca_file, "tls ca_file")
    key = None if tls.key_file is None else read_pem(tls.key_file, "tls key_file")
    cert = None if tls.cert_file is None else read_pem(tls.cert_file, "tls cert_file")
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def channel_options(
    max_message_bytes: int = 64 * MiB, tls: ClientTLS | None = None
) -> list[tuple[str, int | str]]:
    """Client channel options: message caps matching the servers', keepalive, the TLS name override."""
    options: list[tuple[str, int | str]] = [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.keepalive_permit_without_calls", 1),
        # A restarted server is reached again within about a second, not after gRPC's default back-off
        # (up to 120 s: 36.8 s measured after a minute down).
        ("grpc.initial_reconnect_backoff_ms", 250),
        ("grpc.min_reconnect_backoff_ms", 250),
        ("grpc.max_reconnect_backoff_ms", 1_000),
    ]
    if tls is not None and tls.server_name is not None:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return options


def open_channel(
    address: str, *, max_message_bytes: int = 64 * MiB, tls: ClientTLS | None = None
) -> grpc.aio.Channel:
    """An asyncio channel to ``address``: TLS (or mutual TLS) with ``tls``, plaintext without."""
    options = channel_options(max_message_bytes, tls)
    if tls is None:
        return grpc.aio.insecure_channel(address, options=options)
    return grpc.aio.secure_channel(address, channel_credentials(tls), options=options)
