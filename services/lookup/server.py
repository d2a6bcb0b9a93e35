"""Starting and running a lookup drafter: engine, worker thread, the ModelService servicer, metrics."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import grpc
import structlog
from polyspec.v1 import model_pb2_grpc
from prometheus_client import Gauge

from core.modelcalls import EngineInfo
from core.serving.metrics import MetricsEndpoint
from core.serving.server import serve_until_signal, start_server
from core.serving.tls import server_credentials
from services.lookup.engine import LookupEngine
from services.lookup.settings import LookupServiceSettings
from services.model.metrics import ModelMetrics
from services.model.server import MAX_SWEEP_PERIOD_SECONDS, SERVICE_NAME, WorkerServer, write_port_file
from services.model.servicer import ModelServicer
from services.model.worker import ModelWorker

log = structlog.get_logger(__name__)


@dataclass
class LookupServer(WorkerServer[LookupEngine]):
    """A serving lookup drafter."""

    stopped_event: ClassVar[str] = "lookup_server_stopped"


def _observe(metrics: ModelMetrics, engine: LookupEngine, worker: ModelWorker) -> None:
    """The model service's gauges (no KV cache: 0 bytes) and the lookup's own."""
    metrics.observe(
        cache_bytes=lambda: 0,
        cache_sessions=lambda: engine.sessions.session_count,
        queue_depth=lambda: worker.depth,
        token_masks=lambda: len(engine.token_masks),
        emulated_forward_seconds=0.0,
    )
    indexed = Gauge(
        "polyspec_lookup_indexed_tokens",
        "Context tokens indexed over all sequences.",
        registry=metrics.registry,
    )
    indexed.set_function(lambda: engine.sessions.total_tokens)
    memory = Gauge(
        "polyspec_lookup_memory_tokens",
        "Generated tokens of finished sequences held by the cross-request memory.",
        registry=metrics.registry,
    )
    memory.set_function(lambda: 0 if engine.memory is None else engine.memory.tokens)


async def _sweep_idle(engine: LookupEngine, period: float) -> None:
    while True:
        await asyncio.sleep(period)
        engine.expire_idle()


async def start_lookup_server(
    settings: LookupServiceSettings, *, info: EngineInfo | None = None
) -> LookupServer:
    """Reads the target's identity (``info``: given instead), then serves polyspec.v1.ModelService
    (Draft; Score refused)."""
    if settings.grpc.tls is not None:
        server_credentials(settings.grpc.tls)
    metrics = ModelMetrics()
    worker = ModelWorker(settings.max_queue, thread_name="polyspec-lookup")
    try:
        engine = await worker.run(
            lambda: LookupEngine.load(settings) if info is None else LookupEngine(settings, info)
        )
    except BaseException:
        worker.shutdown()
        raise
    _observe(metrics, engine, worker)
    servicer = ModelServicer(engine, worker, metrics)

    def register(server: grpc.aio.Server) -> None:
        model_pb2_grpc.add_ModelServiceServicer_to_server(servicer, server)

    running = await start_server(settings.grpc, [register], [SERVICE_NAME])
    endpoint = None
    if settings.metrics_port is not None:
        endpoint = MetricsEndpoint(metrics.registry, settings.metrics_host, settings.metrics_port)
    period = min(settings.cache_ttl_seconds / 2, MAX_SWEEP_PERIOD_SECONDS)
    sweeper = asyncio.create_task(_sweep_idle(engine, period))
    log.info(
        "lookup_server_ready",
        kind=settings.kind,
        target_model_dir=str(settings.target_model_dir),
        cross_request_memory_tokens=settings.cross_request_memory_tokens,
        port=running.port,
        metrics_port=None if endpoint is None else endpoint.port,
    )
    return LookupServer(running, engine, worker, metrics, endpoint, sweeper)


async def run(settings: LookupServiceSettings, port_file: Path | None = None) -> None:
    """Serves until SIGTERM or SIGINT; writes the bound port to ``port_file`` once serving."""
    server = await start_lookup_server(settings)
    try:
        if port_file is not None:
            write_port_file(port_file, server.port)
        await serve_until_signal(server.running)
    finally:
        await server.stop()
