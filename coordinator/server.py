"""The coordinator server: connect to the model services, check the pair, then serve CoordinatorService.

``start_coordinator`` returns only once the services answered Info and the pair checks passed, so the
server reports SERVING exactly when it can generate. ``run`` is the process entry point (blocks until
SIGTERM/SIGINT, then drains).

Interceptors, outermost first: the optional bearer-token check (``core.serving.auth``), then the error
interceptor. The servicer sends the acceptance marker (``core.serving.interceptor.mark_accepted``) once
it admitted a request: the SDK re-sends a failed call only when it lacks the marker, i.e. when the
coordinator never started on it (an admission refusal included). The channels to the model services use
``settings.model_tls`` and ``settings.max_message_bytes``.

A stop cuts the generations still running after its grace; their handlers release the requests' caches
on the model services (``RunningServer.stop`` waits for them) before the channels close.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import structlog
from polyspec.v1 import coordinator_pb2, coordinator_pb2_grpc

from coordinator.admission import AdmissionGate
from coordinator.callcost import TimeoutRule
from coordinator.clients import ModelServiceClient
from coordinator.config import SHIPPED_DISCO_ARTIFACTS, CoordinatorSettings
from coordinator.discovery import DiscoveryError, source_from_spec
from coordinator.lookahead import StopClassifierRef
from coordinator.loop import LoopServices
from coordinator.loop.classifiers import StopClassifierRegistry
from coordinator.loop.masks import TokenMaskRegistry
from coordinator.metrics import CoordinatorMetrics
from coordinator.pair import (
    ModelEndpoint,
    ModelPair,
    PairMismatchError,
    align_pair,
    check_declared_fingerprint,
    endpoint_from_info,
)
from coordinator.replicas import ReplicaPolicy, ReplicaPool
from coordinator.servicer import CoordinatorServicer
from core.disco.artifact import DiscoArtifactError, find_artifact, load_artifact
from core.errors import (
    DeadlineExceededError,
    InvalidArgumentError,
    PolyspecError,
    UnavailableError,
)
from core.modelcalls import EngineInfo
from core.serving.auth import BearerTokenInterceptor, load_token
from core.serving.metrics import MetricsEndpoint
from core.serving.server import RunningServer, serve_until_signal, start_server

log = structlog.get_logger(__name__)

# Threads that tokenize and template prompts. Each holds one prompt's tokenization at a time (a few
# hundred bytes of memory per prompt byte: ``CoordinatorSettings.max_prompt_bytes``), so this and the
# byte cap bound that memory; more requests wait for a thread instead of blocking the event loop.
PROMPT_WORKERS = 2
SERVICE_NAME = coordinator_pb2.DESCRIPTOR.services_by_name["CoordinatorService"].full_name


@dataclass
class CoordinatorServer:
    """A started coordinator: its gRPC server, the services it talks to and its metrics endpoint."""

    running: RunningServer
    services: LoopServices
    metrics_endpoint: MetricsEndpoint | None
    discovery_task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return self.running.port

    @property
    def metrics_port(self) -> int | None:
        return None if self.metrics_endpoint is None else self.metrics_endpoint.port

    async def stop(self, grace: float | None = None) -> None:
        """Drains (NOT_SERVING, in-flight calls finish within the grace; the cut ones release their
        caches), then closes every channel."""
        if self.discovery_task is not None:
            self.discovery_task.cancel()
            await asyncio.gather(self.discovery_task, return_exceptions=True)
        await self.running.stop(grace)
        if self.services.background:  # Release calls of requests cancelled by the stop
            await asyncio.gather(*self.services.background, return_exceptions=True)
        await _close_services(self.services)
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.close()


async def _first_endpoint(pool: ReplicaPool, declared: str | None, timeout: float) -> ModelEndpoint:
    """Describes a role from the first of its replicas that answers Info; checks the declared tokenizer."""
    addresses = pool.addresses

    async def info(address: str) -> tuple[str, EngineInfo]:
        return address, await pool.replica(address).client.info(timeout=timeout, wait_for_ready=True)

    calls = [asyncio.ensure_future(info(a)) for a in addresses]
    last_error: BaseException | None = None
    try:
        for finished in asyncio.as_completed(calls):
            try:
                address, answer = await finished
            except PolyspecError as exc:
                last_error = exc
                continue
            endpoint = await asyncio.to_thread(endpoint_from_info, pool.role, address, answer)
            check_declared_fingerprint(endpoint, declared)
            pool.expected_fingerprint = endpoint.fingerprint
            pool.mark_verified(address, capacity=answer.max_queue)
            return endpoint
    finally:
        for task in calls:
            task.cancel()
    if isinstance(last_error, DeadlineExceededError):
        raise UnavailableError(
            f"{pool.role} at {', '.join(addresses)} did not answer Info within {timeout:g} s"
        ) from last_error
    assert last_error is not None
    raise last_error


async def _first_replica_set(updates: AsyncIterator[frozenset[str]], timeout: float) -> tuple[str, ...]:
    """The first non-empty replica set a discovery source reports (targets may still be loading)."""
    try:
        async with asyncio.timeout(timeout):
            async for addresses in updates:
                if addresses:
                    return tuple(sorted(addresses))
    except TimeoutError:
        pass
    raise UnavailableError(f"target discovery found no ready replica within {timeout:g} s")


async def follow_discovery(
    updates: AsyncIterator[frozenset[str]], pool: ReplicaPool, stop: Callable[[], None]
) -> None:
    """Applies every replica set a source reports to the pool; an unrecoverable source stops the server."""
    try:
        async for addresses in updates:
            log.info("target_replicas", addresses=sorted(addresses))
            pool.update(addresses)
    except DiscoveryError:
        log.exception("target_discovery_failed")
        stop()


def replica_policy(settings: CoordinatorSettings, role: str) -> ReplicaPolicy:
    """How the ``role`` pool times calls out and ejects replicas; the drafter pool never waits for one."""
    return ReplicaPolicy(
        timeouts=TimeoutRule(
            factor=settings.call_timeout_factor,
            floor=settings.min_call_timeout_seconds,
            cap=settings.call_timeout_seconds,
        ),
        eject_after_failures=settings.eject_after_failures,
        ejection_seconds=settings.ejection_seconds,
        probe_timeout_seconds=settings.min_call_timeout_seconds,
        persistent=role == "target",
        retry_seconds=settings.call_retry_seconds,
    )


async def connect(
    settings: CoordinatorSettings,
    metrics: CoordinatorMetrics,
    updates: AsyncIterator[frozenset[str]] | None = None,
) -> LoopServices:
    """Opens the replica pools, reads Info from both roles and checks the pair.

    With ``updates`` (a discovery source), the first non-empty replica set seeds the target pool.
    """

    def pool(role: str, addresses: tuple[str, ...]) -> ReplicaPool:
        def make_client(address: str) -> ModelServiceClient:
            return ModelServiceClient(
                address,
                role,
                max_message_bytes=settings.max_message_bytes,
                observer=metrics.observe_call,
                tls=settings.model_tls,
            )

        return ReplicaPool(
            role,
            addresses,
            make_client,
            policy=replica_policy(settings, role),
            on_event=metrics.observe_replica_event,
        )

    addresses = settings.target_addresses
    if updates is not None:
        addresses = await _first_replica_set(updates, settings.startup_timeout_seconds)
    targets = pool("target", addresses)
    drafters = None if settings.drafter_address is None else pool("drafter", (settings.drafter_address,))
    lookup = settings.lookup_drafter_address
    lookups = None if lookup is None else pool("lookup drafter", (lookup,))
    try:
        timeout = settings.startup_timeout_seconds
        target = await _first_endpoint(targets, settings.target_tokenizer_fingerprint, timeout)
        drafter = None
        if drafters is not None:
            drafter = await _first_endpoint(drafters, settings.drafter_tokenizer_fingerprint, timeout)
        lookup_limit = 0
        if lookups is not None:
            lookup_limit = (await _check_lookup_drafter(lookups, target, timeout)).max_draft_tokens
        pair = await asyncio.to_thread(align_pair, target, drafter)
    except BaseException:
        await _close_pools(targets, drafters, lookups)
        raise
    _report_pair(pair, metrics)
    classifiers = None
    if settings.disco_artifact is not None:
        try:
            folder = _stop_classifier_folder(settings, pair)
            if folder is not None:
                pair, classifiers = _load_stop_classifier(folder, pair, settings.max_lookahead_k)
        except BaseException:
            await _close_pools(targets, drafters, lookups)
            raise
    masks = None
    if pair.cross_vocabulary and pair.alignment is not None and pair.alignment.intersection is not None:
        masks = TokenMaskRegistry(pair.alignment.mask_id, pair.alignment.mask_bitmap, metrics)
    return LoopServices(
        settings=settings,
        pair=pair,
        targets=targets,
        drafters=drafters,
        lookups=lookups,
        lookup_max_draft_tokens=lookup_limit,
        metrics=metrics,
        admission=_admission_gate(settings, metrics),
        token_masks=masks,
        stop_classifiers=classifiers,
        prompt_pool=ThreadPoolExecutor(PROMPT_WORKERS, thread_name_prefix="polyspec-prompt"),
    )


def _stop_classifier_folder(settings: CoordinatorSettings, pair: ModelPair) -> Path | None:
    """The artifact folder ``disco_artifact`` names; under ``auto`` the one trained for the pair served.

    ``auto`` searches ``disco_artifact_dir`` (else the artifacts shipped in the package) by the model
    fingerprints from Info: none there logs ``stop_classifier_none`` and returns None (no classifier); an
    unreadable folder or spec there is ``InvalidArgumentError`` naming the setting.
    """
    if settings.disco_artifact != "auto":
        return settings.disco_artifact
    assert pair.drafter is not None, "settings refuse disco_artifact without a drafter"
    root = settings.disco_artifact_dir or SHIPPED_DISCO_ARTIFACTS
    drafter, target = pair.drafter.model_fingerprint, pair.target.model_fingerprint
    try:
        folder = find_artifact(root, drafter, target)
    except DiscoArtifactError as exc:
        name = "disco_artifact_dir" if settings.disco_artifact_dir is not None else "disco_artifact"
        raise InvalidArgumentError(name, str(exc)) from exc
    if folder is None:
        log.info(
            "stop_classifier_none",
            searched=str(root),
            drafter=pair.drafter.label,
            drafter_model_fingerprint=drafter,
            target=pair.target.label,
            target_model_fingerprint=target,
        )
    return folder


def _load_stop_classifier(
    folder: Path, pair: ModelPair, max_lookahead_k: int
) -> tuple[ModelPair, StopClassifierRegistry]:
    """The pair with its trained stop classifier, and the registry that sends it to the drafters.

    The log line ``stop_classifier_loaded`` tells ``disco``'s cap without a K (``disco_default_k``: the
    draft length the classifier was trained on, ``trained_k``, at most ``max_lookahead_k``).

    An unreadable artifact is ``InvalidArgumentError`` naming ``disco_artifact``; one trained for another
    drafter or target (model fingerprints from Info) is ``PairMismatchError``: both refuse start-up.
    """
    assert pair.drafter is not None, "settings refuse disco_artifact without a drafter"
    try:
        artifact = load_artifact(folder)
    except DiscoArtifactError as exc:
        raise InvalidArgumentError("disco_artifact", str(exc)) from exc
    try:
        artifact.check_pair(pair.drafter.model_fingerprint, pair.target.model_fingerprint)
    except DiscoArtifactError as exc:
        raise PairMismatchError(f"{folder}: {exc}") from exc
    ref = StopClassifierRef(
        artifact.classifier_id,
        artifact.classifier.threshold,
        artifact.trained_k,
        artifact.threshold_replay,
    )
    log.info(
        "stop_classifier_loaded",
        path=str(folder),
        classifier_id=artifact.classifier_id,
        kind=artifact.classifier.kind.value,
        threshold=artifact.classifier.threshold,
        regime=artifact.regime,
        trained_k=artifact.trained_k,
        disco_default_k=ref.default_k(max_lookahead_k),
        threshold_follows_costs=bool(ref.replays),
    )
    return replace(pair, stop_classifier=ref), StopClassifierRegistry(artifact)


async def _check_lookup_drafter(lookups: ReplicaPool, target: ModelEndpoint, timeout: float) -> ModelEndpoint:
    """A lookup drafter proposes the target's own token ids: it must serve the target's tokenizer."""
    endpoint = await _first_endpoint(lookups, None, timeout)
    if endpoint.fingerprint != target.fingerprint:
        raise PairMismatchError(
            f"{endpoint.label} serves tokenizer {endpoint.fingerprint}, but {target.label} serves "
            f"{target.fingerprint}: a lookup drafter proposes the target's own token ids (start it with "
            "--target-model set to the target's model folder)"
        )
    return endpoint


def _admission_gate(settings: CoordinatorSettings, metrics: CoordinatorMetrics) -> AdmissionGate:
    """The gate of ``settings``' admission caps; its gauges read it at scrape time."""
    gate = AdmissionGate(settings.max_concurrent_requests, settings.max_queued_requests)
    metrics.admission_running.set_function(lambda: gate.running)
    metrics.admission_queued.set_function(lambda: gate.queued)
    return gate


def _report_pair(pair: ModelPair, metrics: CoordinatorMetrics) -> None:
    """Logs the pair and its vocabulary alignment; sets the intersection-coverage gauge."""
    alignment = pair.alignment
    details: dict[str, object] = {}
    if pair.drafter is not None:
        coverage = 1.0 if pair.same_tokenizer else (0.0 if alignment is None else alignment.coverage)
        metrics.vocab_intersection_coverage.set(coverage)
        details["vocab_intersection_coverage"] = round(coverage, 4)
    if alignment is not None:
        details["vocabulary"] = alignment.match.reason
        if alignment.intersection is not None:
            details["intersection_tokens"] = alignment.intersection.mapped_count
        check = alignment.decode_check
        details["decode_check"] = "skipped" if check is None else ("ok" if check.ok else "mismatches")
        if alignment.tli_error:
            details["tli_error"] = alignment.tli_error
    if pair.alignment_error:
        details["alignment_error"] = pair.alignment_error
    log.info(
        "model_pair",
        target=pair.target.model_name,
        drafter=None if pair.drafter is None else pair.drafter.model_name,
        same_tokenizer=pair.same_tokenizer,
        cross_vocabulary=pair.cross_vocabulary,
        emulated_latency=pair.emulated_latency,
        **details,
    )


async def _close_pools(*pools: ReplicaPool | None) -> None:
    for pool in pools:
        if pool is not None:
            await pool.close()


async def _close_services(services: LoopServices) -> None:
    """Closes the replica pools and the prompt pool (a prompt still being tokenized is left to finish)."""
    if services.prompt_pool is not None:
        services.prompt_pool.shutdown(wait=False, cancel_futures=True)
    await _close_pools(services.targets, services.drafters, services.lookups)


def _interceptors(settings: CoordinatorSettings) -> list[grpc.aio.ServerInterceptor]:  # type: ignore[type-arg]
    """The bearer-token check, when configured (a bad token source raises ``TokenError``)."""
    token = load_token(settings.auth_token_file, settings.auth_token_env)
    return [] if token is None else [BearerTokenInterceptor(token)]


async def start_coordinator(settings: CoordinatorSettings) -> CoordinatorServer:
    """Connects to the model services, then starts serving (health SERVING once ready)."""
    interceptors = _interceptors(settings)  # before connecting: a bad token source fails fast
    metrics = CoordinatorMetrics()
    updates = None
    if settings.target_discovery is not None:
        source = source_from_spec(
            settings.target_discovery, dns_interval_seconds=settings.dns_interval_seconds
        )
        updates = aiter(source.updates())
    services = await connect(settings, metrics, updates)
    servicer = CoordinatorServicer(services)

    def register(server: grpc.aio.Server) -> None:
        coordinator_pb2_grpc.add_CoordinatorServiceServicer_to_server(servicer, server)

    try:
        running = await start_server(settings.grpc, [register], [SERVICE_NAME], interceptors)
    except BaseException:
        await _close_services(services)
        raise
    endpoint = None
    if settings.metrics_port is not None:
        endpoint = MetricsEndpoint(metrics.registry, settings.metrics_host, settings.metrics_port)
    server = CoordinatorServer(running, services, endpoint)
    if updates is not None:

        def stop() -> None:
            # Kubernetes restarts the pod: stop serving rather than route by a stale replica set.
            asyncio.get_running_loop().create_task(running.stop())

        server.discovery_task = asyncio.create_task(follow_discovery(updates, services.targets, stop))
    return server


def _write_port_file(path: Path, port: int) -> None:
    """Writes the port atomically (readers never see a partial file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(f"{port}\n")
    os.replace(partial, path)


async def serve(settings: CoordinatorSettings, port_file: Path | None = None) -> None:
    """Starts the coordinator, writes the bound port once serving, serves until SIGTERM/SIGINT."""
    server = await start_coordinator(settings)
    try:
        if port_file is not None:
            _write_port_file(port_file, server.port)
        await serve_until_signal(server.running)
    finally:
        await server.stop()


def run(settings: CoordinatorSettings, port_file: Path | None = None) -> None:
    """Process entry point of ``polyspec serve coordinator`` (blocks until the server has drained)."""
    asyncio.run(serve(settings, port_file))
