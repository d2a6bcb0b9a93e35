"""grpc.aio server furniture shared by both services.

A factory builds a server bound to a host/port (port 0 for tests) with health checking,
reflection, keepalive, ``max_connection_age``, message-size caps, TLS or mutual TLS
(``core.serving.tls``) and the error interceptor; ``serve_until_signal`` runs it until SIGTERM/SIGINT
and drains gracefully. A stop waits, after its grace, for the handlers of the calls it cut to unwind,
so their cleanup (a coordinator's cache releases) runs while the channels it needs are still open.

Connection age: a connection older than ``max_connection_age_ms`` is asked to go away (GOAWAY), so
clients reconnect and spread over the replicas; new calls then use a new connection. The calls still
running on the old one keep going for ``max_connection_age_grace_ms``; unset (the default), that grace
is unlimited, so the age limit never cuts a live call (a long streamed generation included). Every
call is bounded by its own deadline instead.

With TLS, kubelet's gRPC probes (which speak plaintext) cannot reach the health service on the TLS
port: ``health_port`` serves ``grpc.health.v1`` alone, in plaintext, on a second port.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NoReturn

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from pydantic import BaseModel, ConfigDict, Field

from core.serving import tls as tls_files
from core.serving.interceptor import ErrorInterceptor, HandlerTasks
from core.serving.tls import ServerTLS

log = structlog.get_logger(__name__)

MiB = tls_files.MiB  # the services size their caps with it
# The largest value of grpc's integer options; as the connection-age grace it means "no limit".
GRPC_INT_MAX = 2**31 - 1


class GrpcServerSettings(BaseModel):
    """Transport settings of one gRPC server (validated, frozen)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field("127.0.0.1", description="Address to bind; 0.0.0.0 in containers.")
    port: int = Field(0, ge=0, le=65535, description="0 picks a free port (tests).")
    max_message_bytes: int = Field(
        64 * MiB, ge=MiB, le=GRPC_INT_MAX, description="Cap on one message in bytes, both ways."
    )
    keepalive_time_ms: int = Field(30_000, ge=1_000)
    keepalive_timeout_ms: int = Field(10_000, ge=1_000)
    max_connection_age_ms: int = Field(
        30 * 60_000,
        ge=0,
        le=GRPC_INT_MAX,
        description="Ask clients to reconnect (GOAWAY) after a connection lived this long, so they "
        "rebalance across replicas; 0 = no limit.",
    )
    max_connection_age_grace_ms: int | None = Field(
        None,
        ge=0,
        le=GRPC_INT_MAX,
        description="How long calls still running on a connection past its age may go on before they "
        "are cut; None = unlimited (a live call is never cut by the age limit).",
    )
    shutdown_grace_seconds: float = Field(10.0, ge=0.0)
    shutdown_cleanup_seconds: float = Field(
        10.0,
        ge=0.0,
        description="After the grace, how long a stop waits for the calls it cut to run their cleanup "
        "(the coordinator releases their caches on the model services).",
    )
    tls: ServerTLS | None = Field(
        None, description="Serve TLS (mutual TLS with a client CA); None: plaintext."
    )
    health_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="Also serve grpc.health.v1 alone, in plaintext, on this port (for probes that cannot "
        "speak TLS); 0 picks one; None: no such port.",
    )


def channel_options(max_message_bytes: int = 64 * MiB) -> list[tuple[str, int | str]]:
    """Client channel options matching the servers' caps and keepalive (``core.serving.tls``)."""
    return tls_files.channel_options(max_message_bytes)


def _server_options(settings: GrpcServerSettings) -> list[tuple[str, int]]:
    options = [
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", settings.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", settings.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.so_reuseport", 0),
    ]
    if settings.max_connection_age_ms > 0:
        grace = settings.max_connection_age_grace_ms
        options += [
            ("grpc.max_connection_age_ms", settings.max_connection_age_ms),
            ("grpc.max_connection_age_grace_ms", GRPC_INT_MAX if grace is None else grace),
        ]
    return options


@dataclass
class RunningServer:
    """A started server, the port it bound and its health servicer (and its plaintext health port)."""

    server: grpc.aio.Server
    port: int
    health: HealthServicer
    service_names: tuple[str, ...]
    grace_seconds: float
    health_server: grpc.aio.Server | None = None
    health_port: int | None = None
    handlers: HandlerTasks = field(default_factory=HandlerTasks)
    cleanup_seconds: float = 10.0

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self.service_names):
            await self.health.set(name, status)

    async def stop(self, grace: float | None = None) -> None:
        """Reports NOT_SERVING, then stops taking calls and lets in-flight ones finish within the grace.

        The calls still running after it are cancelled; their handlers then get ``cleanup_seconds`` to
        unwind (a coordinator's handler releases its request's caches as it ends).
        """
        await self.set_serving(False)
        await self.server.stop(self.grace_seconds if grace is None else grace)
        left = await self.handlers.wait(self.cleanup_seconds)
        if left:
            log.warning("handlers_not_unwound", count=left, seconds=self.cleanup_seconds)
        if self.health_server is not None:
            await self.health_server.stop(0)


def _bind(server: grpc.aio.Server, settings: GrpcServerSettings) -> int:
    """Binds the main port: TLS (``settings.tls``) or plaintext."""
    address = f"{settings.host}:{settings.port}"
    if settings.tls is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, tls_files.server_credentials(settings.tls))
    if port == 0:
        raise OSError(f"could not bind {address}")
    return port


async def _start_health_server(
    settings: GrpcServerSettings, health: HealthServicer
) -> tuple[grpc.aio.Server, int] | tuple[None, None]:
    """The plaintext, health-only listener (``settings.health_port``), when asked for."""
    if settings.health_port is None:
        return None, None
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_insecure_port(f"{settings.host}:{settings.health_port}")
    if port == 0:
        raise OSError(f"could not bind the health port {settings.host}:{settings.health_port}")
    await server.start()
    return server, port


async def start_server(
    settings: GrpcServerSettings,
    register: Sequence[Callable[[grpc.aio.Server], None]],
    service_names: Sequence[str],
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),  # type: ignore[type-arg]
) -> RunningServer:
    """Builds, binds and starts a server; ``register`` adds the servicers.

    ``service_names`` are the full proto names (for health and reflection). Health starts
    SERVING for them; callers flip it with ``RunningServer.set_serving``. ``interceptors`` run
    before the error interceptor, in order (authentication first).
    """
    handlers = HandlerTasks()
    server = grpc.aio.server(
        interceptors=[handlers, *interceptors, ErrorInterceptor()], options=_server_options(settings)
    )
    for add in register:
        add(server)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    port = _bind(server, settings)
    health_server, health_port = await _start_health_server(settings, health_servicer)
    try:
        await server.start()
    except BaseException:
        if health_server is not None:
            await health_server.stop(0)
        raise
    running = RunningServer(
        server,
        port,
        health_servicer,
        tuple(service_names),
        settings.shutdown_grace_seconds,
        health_server,
        health_port,
        handlers,
        settings.shutdown_cleanup_seconds,
    )
    try:
        await running.set_serving(True)
        log.info(
            "server_started",
            host=settings.host,
            port=port,
            services=list(service_names),
            tls="off" if settings.tls is None else ("mutual" if settings.tls.mutual else "on"),
            health_port=health_port,
        )
    except BaseException:
        await running.stop(0)
        raise
    return running


async def serve_until_signal(running: RunningServer) -> None:
    """Blocks until SIGTERM or SIGINT, then drains gracefully (NOT_SERVING first, then stop with grace)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    wait_server = asyncio.ensure_future(running.server.wait_for_termination())
    wait_signal = asyncio.ensure_future(stop.wait())
    await asyncio.wait({wait_server, wait_signal}, return_when=asyncio.FIRST_COMPLETED)
    if stop.is_set():
        log.info("draining", grace_seconds=running.grace_seconds)
        await running.stop()
    wait_signal.cancel()
    wait_server.cancel()


def exit_after_drain() -> NoReturn:
    """Ends a server process right after a clean drain.

    Interpreter shutdown with torch and transformers loaded takes many seconds (thread pools, module
    teardown) and would hold a pod past its termination grace for no benefit: everything worth
    finishing has finished, so flush the logs and exit 0.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
