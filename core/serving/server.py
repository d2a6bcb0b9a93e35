"""grpc.aio server furniture shared by both services.

A factory builds a server bound to a host/port (port 0 for tests) with health checking,
reflection, keepalive, ``max_connection_age``, message-size caps and the error interceptor;
``serve_until_signal`` runs it until SIGTERM/SIGINT and drains gracefully.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from pydantic import BaseModel, ConfigDict, Field

from core.serving.interceptor import ErrorInterceptor

log = structlog.get_logger(__name__)

MiB = 1024 * 1024


class GrpcServerSettings(BaseModel):
    """Transport settings of one gRPC server (validated, frozen)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field("127.0.0.1", description="Address to bind; 0.0.0.0 in containers.")
    port: int = Field(0, ge=0, le=65535, description="0 picks a free port (tests).")
    max_message_bytes: int = Field(64 * MiB, ge=MiB, description="Cap on one message, both ways.")
    keepalive_time_ms: int = Field(30_000, ge=1_000)
    keepalive_timeout_ms: int = Field(10_000, ge=1_000)
    max_connection_age_ms: int = Field(30 * 60_000, ge=10_000)
    max_connection_age_grace_ms: int = Field(60_000, ge=0)
    shutdown_grace_seconds: float = Field(10.0, ge=0.0)


def channel_options(max_message_bytes: int = 64 * MiB) -> list[tuple[str, int]]:
    """Client channel options matching the servers' caps and keepalive."""
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.max_pings_without_data", 0),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


def _server_options(settings: GrpcServerSettings) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", settings.max_message_bytes),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.keepalive_time_ms", settings.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", settings.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
        ("grpc.max_connection_age_ms", settings.max_connection_age_ms),
        ("grpc.max_connection_age_grace_ms", settings.max_connection_age_grace_ms),
        ("grpc.so_reuseport", 0),
    ]


@dataclass
class RunningServer:
    """A started server, the port it bound and its health servicer."""

    server: grpc.aio.Server
    port: int
    health: HealthServicer
    service_names: tuple[str, ...]
    grace_seconds: float

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ("", *self.service_names):
            await self.health.set(name, status)

    async def stop(self, grace: float | None = None) -> None:
        """Reports NOT_SERVING, then stops taking calls and lets in-flight ones finish."""
        await self.set_serving(False)
        await self.server.stop(self.grace_seconds if grace is None else grace)


async def start_server(
    settings: GrpcServerSettings,
    register: Sequence[Callable[[grpc.aio.Server], None]],
    service_names: Sequence[str],
) -> RunningServer:
    """Builds, binds and starts a server; ``register`` adds the servicers.

    ``service_names`` are the full proto names (for health and reflection). Health starts
    SERVING for them; callers flip it with ``RunningServer.set_serving``.
    """
    server = grpc.aio.server(interceptors=[ErrorInterceptor()], options=_server_options(settings))
    for add in register:
        add(server)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    port = server.add_insecure_port(f"{settings.host}:{settings.port}")
    if port == 0:
        raise OSError(f"could not bind {settings.host}:{settings.port}")
    await server.start()
    running = RunningServer(
        server, port, health_servicer, tuple(service_names), settings.shutdown_grace_seconds
    )
    try:
        await running.set_serving(True)
        log.info("server_started", host=settings.host, port=port, services=list(service_names))
    except BaseException:
        await server.stop(0)
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
