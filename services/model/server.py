"""Starting and running a model server: engine, worker thread, gRPC service, metrics endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Generic, TypeVar

import grpc
import structlog
import torch
from polyspec.v1 import model_pb2, model_pb2_grpc

from core.serving.metrics import MetricsEndpoint
from core.serving.server import RunningServer, serve_until_signal, start_server
from core.serving.tls import server_credentials
from services.model.engine import EngineClocks, ModelEngine
from services.model.metrics import ModelMetrics
from services.model.servicer import ModelServicer
from services.model.settings import ModelServiceSettings
from services.model.worker import ModelWorker

log = structlog.get_logger(__name__)

SERVICE_NAME: str = model_pb2.DESCRIPTOR.services_by_name["ModelService"].full_name
MAX_SWEEP_PERIOD_SECONDS = 30.0


E = TypeVar("E")


@dataclass
class WorkerServer(Generic[E]):
    """A serving ModelService over an engine and its worker thread (a model server or a lookup drafter);
    ``stop`` drains it and frees its thread, sweeper and metrics endpoint."""

    running: RunningServer
    engine: E
    worker: ModelWorker
    metrics: ModelMetrics
    metrics_endpoint: MetricsEndpoint | None
    sweeper: asyncio.Task[None]
    _stopped: bool = field(default=False, init=False)
    stopped_event: ClassVar[str] = "server_stopped"

    @property
    def port(self) -> int:
        return self.running.port

    @property
    def metrics_port(self) -> int | None:
        return None if self.metrics_endpoint is None else self.metrics_endpoint.port

    async def stop(self, grace: float | None = None) -> None:
        """Reports NOT_SERVING, lets in-flight calls finish (up to the grace), then frees resources."""
        if self._stopped:
            return
        self._stopped = True
        await self.running.stop(grace)
        self.sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.sweeper
        await asyncio.to_thread(self.worker.shutdown)
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.close()
        log.info(self.stopped_event, port=self.port)


@dataclass
class ModelServer(WorkerServer[ModelEngine]):
    """A serving model server."""

    stopped_event: ClassVar[str] = "model_server_stopped"


async def _sweep_idle(engine: ModelEngine, period: float) -> None:
    """Drops idle caches periodically (requests also drop them before they run).

    Housekeeping: it runs on the event loop, so a full queue of forwards neither delays nor skips it.
    """
    while True:
        await asyncio.sleep(period)
        engine.expire_idle()


async def start_model_server(
    settings: ModelServiceSettings, *, clocks: EngineClocks | None = None
) -> ModelServer:
    """Loads the model, then serves polyspec.v1.ModelService (with health and reflection)."""
    if settings.grpc.tls is not None:
        server_credentials(settings.grpc.tls)  # unreadable certificate files fail before the model loads
    if settings.torch_threads is not None:
        torch.set_num_threads(settings.torch_threads)
    metrics = ModelMetrics()
    worker = ModelWorker(settings.max_queue)
    try:
        engine = await worker.run(
            lambda: ModelEngine.load(settings, clocks=clocks, on_evict=metrics.record_eviction)
        )
    except BaseException:
        worker.shutdown()
        raise
    metrics.observe(
        cache_bytes=lambda: engine.cache.total_bytes,
        cache_sessions=lambda: engine.cache.session_count,
        queue_depth=lambda: worker.depth,
        token_masks=lambda: len(engine.token_masks),
        emulated_forward_seconds=settings.emulated_forward_seconds,
    )
    servicer = ModelServicer(engine, worker, metrics)

    def register(server: grpc.aio.Server) -> None:
        model_pb2_grpc.add_ModelServiceServicer_to_server(servicer, server)

    running = await start_server(settings.grpc, [register], [SERVICE_NAME])
    endpoint = None
    if settings.metrics_port is not None:
        endpoint = MetricsEndpoint(metrics.registry, settings.metrics_host, settings.metrics_port)
    period = min(settings.cache_ttl_seconds / 2, MAX_SWEEP_PERIOD_SECONDS)
    sweeper = asyncio.create_task(_sweep_idle(engine, period))
    _log_ready(settings, engine, running.port, endpoint)
    return ModelServer(running, engine, worker, metrics, endpoint, sweeper)


def _log_ready(
    settings: ModelServiceSettings, engine: ModelEngine, port: int, endpoint: MetricsEndpoint | None
) -> None:
    info = engine.info
    log.info(
        "model_server_ready",
        model=info.model_name,
        model_type=info.model_type,
        device=info.device,
        dtype=info.dtype,
        port=port,
        metrics_port=None if endpoint is None else endpoint.port,
    )
    if settings.emulated_forward_seconds > 0:
        log.warning(
            "emulated_forward_latency",
            benchmarking_flag=True,
            emulated_forward_seconds=settings.emulated_forward_seconds,
        )


def write_port_file(path: Path, port: int) -> None:
    """Writes the bound port atomically (readers never see a partial file)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(f"{port}\n")
    temporary.replace(path)


async def run(settings: ModelServiceSettings, port_file: Path | None = None) -> None:
    """Serves until SIGTERM or SIGINT; writes the bound port to ``port_file`` once serving."""
    server = await start_model_server(settings)
    try:
        if port_file is not None:
            write_port_file(port_file, server.port)
        await serve_until_signal(server.running)
    finally:
        await server.stop()
