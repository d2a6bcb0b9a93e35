"""Where the target replicas are: a static list, the DNS of a headless Service, or the EndpointSlices
of a Kubernetes Service, watched live.

Every source is a ``ReplicaSource``: ``updates()`` yields the full current set of replica addresses
(``"host:port"``, IPv6 hosts in brackets) — the first set as soon as it is known, then a new set each
time it changes, never the same set twice in a row. Consumers apply each set as a whole
(``ReplicaPool.update(addresses)``); a finite source (a static list) ends after its only set.

``source_from_spec`` turns the coordinator's ``--target`` value into a source:

- ``HOST:PORT[,HOST:PORT...]`` (or ``static:///HOST:PORT,...``): a fixed list;
- ``dns:///NAME:PORT``: the A/AAAA records of ``NAME`` (a headless Service lists one record per ready
  pod), polled;
- ``kubernetes:///SERVICE.NAMESPACE:PORT``: the ready endpoints of the EndpointSlices of ``SERVICE``
  through the Kubernetes API (in-cluster credentials), listed once and then watched; ``PORT`` is the
  Service port's name or number.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

import structlog
import urllib3
from kubernetes import client, config, watch

from core.errors import InvalidArgumentError

log = structlog.get_logger(__name__)

SPEC_FIELD = "target"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
HTTP_GONE = 410
# getaddrinfo answers meaning "the name has no records": a headless Service with no ready pod.
_NO_RECORDS = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""Resolves a host name to its IP addresses (``host, port -> [ip, ...]``)."""


class DiscoveryError(RuntimeError):
    """A discovery source failed in a way it cannot recover from (a bug or an unexpected answer)."""


class ReplicaSource(Protocol):
    """A source of target-replica address sets."""

    def updates(self) -> AsyncGenerator[frozenset[str], None]:
        """Yields the full current address set: first at once, then on every change."""
        ...


def format_address(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(text: str, field: str = SPEC_FIELD) -> tuple[str, int]:
    """Splits ``host:port`` or ``[ipv6]:port`` into its host and port."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host:
        raise InvalidArgumentError(field, f"expected HOST:PORT, got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise InvalidArgumentError(field, f"an IPv6 host needs brackets ([::1]:50052), got {text!r}")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise InvalidArgumentError(field, f"port must be 1..65535, got {port_text!r} in {text!r}")
    return host, int(port_text)


class StaticReplicas:
    """A fixed list of replicas: yields it once, then ends."""

    def __init__(self, addresses: Iterable[str]) -> None:
        parsed = [parse_address(a) for a in addresses]
        if not parsed:
            raise InvalidArgumentError(SPEC_FIELD, "needs at least one HOST:PORT")
        self.addresses = frozenset(format_address(host, port) for host, port in parsed)

    async def updates(self) -> AsyncGenerator[frozenset[str], None]:
        yield self.addresses


async def resolve_host(host: str, port: int) -> list[str]:
    """The IP addresses of ``host`` (A and AAAA records) from the system resolver."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class DnsReplicas:
    """The A/AAAA records of a name (a headless Service: one per ready pod), polled every interval.

    A name without records (no ready pod) is the empty set; a failed lookup keeps the last set.
    """

    def __init__(
        self, host: str, port: int, interval_seconds: float = 5.0, resolver: Resolver | None = None
    ) -> None:
        if not host:
            raise InvalidArgumentError(SPEC_FIELD, "dns:/// needs a host name")
        if not 0 < port < 65536:
            raise InvalidArgumentError(SPEC_FIELD, f"port must be 1..65535, got {port}")
        if interval_seconds < 0:
            raise InvalidArgumentError("interval_seconds", f"must be >= 0, got {interval_seconds}")
        self.host = host
        self.port = port
        self.interval_seconds = interval_seconds
        self._resolve = resolver or resolve_host

    async def _lookup(self, previous: frozenset[str]) -> frozenset[str]:
        try:
            hosts = await self._resolve(self.host, self.port)
        except socket.gaierror as err:
            if err.errno in _NO_RECORDS:
                return frozenset()
            log.warning("dns_lookup_failed", host=self.host, error=str(err))
            return previous
        except OSError as err:
            log.warning("dns_lookup_failed", host=self.host, error=str(err))
            return previous
        return frozenset(format_address(h, self.port) for h in hosts)

    async def updates(self) -> AsyncGenerator[frozenset[str], None]:
        current = await self._lookup(frozenset())
        yield current
        while True:
            await asyncio.sleep(self.interval_seconds)
            found = await self._lookup(current)
            if found != current:
                current = found
                yield current


def ready_addresses(endpoint_slice: Any, port_name: str) -> frozenset[str]:
    """The addresses of the ready endpoints of one EndpointSlice (a ``V1EndpointSlice``) on a port.

    ``port_name`` matches the port's name, or its number when it is all digits. An endpoint whose
    ``ready`` condition is unset counts as ready (the API's rule); a terminating one is not ready.
    """
    port = next(
        (p.port for p in endpoint_slice.ports or [] if p.name == port_name or str(p.port) == port_name),
        None,
    )
    if port is None:
        return frozenset()
    found = set()
    for endpoint in endpoint_slice.endpoints or []:
        conditions = endpoint.conditions
        ready = conditions is None or conditions.ready is None or bool(conditions.ready)
        if ready and endpoint.addresses:
            found.add(format_address(endpoint.addresses[0], int(port)))
    return frozenset(found)


class _WatchGoneError(Exception):
    """The watch's resourceVersion is too old (HTTP 410): relist."""


class _SliceWatcher:
    """Keeps the ready addresses of one Service's EndpointSlices with the sync client (runs in a thread).

    Lists, then watches from the list's resourceVersion; a dropped or timed-out watch resumes from the
    last resourceVersion seen; 410 Gone relists. ``emit`` gets every changed address set.
    """

    def __init__(
        self,
        api: Any,
        source: EndpointSliceReplicas,
        emit: Callable[[frozenset[str] | Exception], None],
    ) -> None:
        self._api = api
        self._source = source
        self._emit = emit
        self._stopped = threading.Event()
        self._watch: Any = None
        self._slices: dict[str, frozenset[str]] = {}
        self._published: frozenset[str] | None = None
        self._resource_version = ""
        self._failures = 0

    def stop(self) -> None:
        """Asks the loop to end and unblocks a pending watch read."""
        self._stopped.set()
        current = self._watch
        if current is not None:
            current.stop()

    def run(self) -> None:
        """Lists and watches until stopped; an unexpected failure goes to ``emit`` instead of a set."""
        try:
            self._run()
        except Exception as err:  # surfaced to the consumer: discovery must never go quiet
            log.exception("endpointslice_discovery_crashed", service=self._source.service)
            self._emit(err)

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self._relist()
                self._watch_until_gone()
            except _WatchGoneError:
                log.info("endpointslice_watch_gone", service=self._source.service)
            except (client.ApiException, urllib3.exceptions.HTTPError, OSError, ValueError) as err:
                log.warning("endpointslice_discovery_failed", service=self._source.service, error=str(err))
                self._back_off()

    def _relist(self) -> None:
        listed = self._api.list_namespaced_endpoint_slice(
            self._source.namespace,
            label_selector=self._source.label_selector,
            _request_timeout=self._source.request_timeout_seconds,
        )
        self._slices = {
            item.metadata.name: ready_addresses(item, self._source.port_name) for item in listed.items or []
        }
        self._resource_version = str(listed.metadata.resource_version)
        self._failures = 0
        self._publish()

    def _watch_until_gone(self) -> None:
        """Watches from the last resourceVersion, resuming dropped watches, until stopped or 410 Gone."""
        while not self._stopped.is_set():
            self._watch = watch.Watch()  # type: ignore[no-untyped-call]
            try:
                if self._stopped.is_set():  # stop() may have run before the watch existed
                    return
                if self._stream(self._watch) == 0:
                    self._back_off()  # an empty watch: never spin on a server that ends them at once
            except client.ApiException as err:
                if err.status == HTTP_GONE:
                    raise _WatchGoneError from err
                raise
            except (urllib3.exceptions.HTTPError, OSError) as err:
                if self._stopped.is_set():
                    return
                log.info("endpointslice_watch_dropped", service=self._source.service, error=str(err))
                self._back_off()
            finally:
                self._watch = None

    def _stream(self, current: Any) -> int:
        """Follows one watch request until the server ends it, keeping the last resourceVersion seen.

        Returns how many events it brought.
        """
        events = 0
        for event in current.stream(
            self._api.list_namespaced_endpoint_slice,
            self._source.namespace,
            label_selector=self._source.label_selector,
            resource_version=self._resource_version,
            allow_watch_bookmarks=True,
            timeout_seconds=self._source.watch_timeout_seconds,
            _request_timeout=self._source.request_timeout_seconds,
        ):
            if self._stopped.is_set():
                break
            events += 1
            self._apply(event)
            self._resource_version = current.resource_version or self._resource_version
            self._failures = 0
        return events

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            return
        endpoint_slice = event["object"]
        name = endpoint_slice.metadata.name
        if kind == "DELETED":
            self._slices.pop(name, None)
        else:
            self._slices[name] = ready_addresses(endpoint_slice, self._source.port_name)
        self._publish()

    def _publish(self) -> None:
        current = frozenset().union(*self._slices.values())
        if current != self._published:
            self._published = current
            self._emit(current)

    def _back_off(self) -> None:
        low, high = self._source.backoff_seconds
        delay = min(high, low * 2**self._failures)
        self._failures += 1
        self._stopped.wait(delay)


class EndpointSliceReplicas:
    """The ready endpoints of a Service's EndpointSlices, through the Kubernetes API.

    Uses in-cluster credentials unless an ``api_client`` (``kubernetes.client.ApiClient``) is given.
    Needs get/list/watch on ``discovery.k8s.io`` endpointslices in ``namespace``. The first set comes
    after the first successful list.
    """

    def __init__(
        self,
        namespace: str,
        service: str,
        port_name: str,
        *,
        api_client: Any = None,
        watch_timeout_seconds: int = 300,
        request_timeout_seconds: float = 330.0,
        backoff_seconds: tuple[float, float] = (0.5, 30.0),
    ) -> None:
        if not namespace or not service:
            raise InvalidArgumentError(SPEC_FIELD, "EndpointSlice discovery needs a service and a namespace")
        if watch_timeout_seconds < 1 or request_timeout_seconds <= watch_timeout_seconds:
            raise InvalidArgumentError(
                "request_timeout_seconds", "must exceed watch_timeout_seconds, which must be >= 1"
            )
        self.namespace = namespace
        self.service = service
        self.port_name = port_name
        self.label_selector = f"{SERVICE_NAME_LABEL}={service}"
        self.watch_timeout_seconds = watch_timeout_seconds
        self.request_timeout_seconds = request_timeout_seconds
        self.backoff_seconds = backoff_seconds
        self._api_client = api_client

    def _client(self) -> tuple[Any, bool]:
        """The API client to use and whether this source owns it."""
        if self._api_client is not None:
            return self._api_client, False
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException as err:
            raise InvalidArgumentError(
                SPEC_FIELD, f"kubernetes:/// discovery needs in-cluster credentials: {err}"
            ) from err
        return client.ApiClient(configuration), True

    async def updates(self) -> AsyncGenerator[frozenset[str], None]:
        api_client, owned = self._client()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[frozenset[str] | Exception] = asyncio.Queue()

        def emit(item: frozenset[str] | Exception) -> None:
            # RuntimeError: the loop closed while the thread was finishing; nobody is listening.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(queue.put_nowait, item)

        watcher = _SliceWatcher(client.DiscoveryV1Api(api_client), self, emit)
        thread = threading.Thread(target=watcher.run, name=f"endpointslices-{self.service}", daemon=True)
        thread.start()
        try:
            while True:
                latest = await queue.get()
                while not queue.empty():  # each set is complete: only the newest matters
                    latest = queue.get_nowait()
                if isinstance(latest, Exception):
                    raise DiscoveryError(
                        f"watching the EndpointSlices of {self.namespace}/{self.service} failed: {latest!r}"
                    ) from latest
                yield latest
        finally:
            # A watch request still on its way has no socket to shut yet: ask again until the thread ends.
            deadline = loop.time() + self.request_timeout_seconds
            while thread.is_alive() and loop.time() < deadline:
                watcher.stop()
                await asyncio.to_thread(thread.join, 0.1)
            if owned:
                api_client.close()


def _split_scheme(spec: str) -> tuple[str, str]:
    scheme, sep, rest = spec.partition("://")
    if not sep:
        return "static", spec
    if not rest.startswith("/"):
        raise InvalidArgumentError(SPEC_FIELD, f"expected {scheme}:///..., got {spec!r}")
    return scheme, rest[1:]


def source_from_spec(spec: str, *, dns_interval_seconds: float = 5.0) -> ReplicaSource:
    """Parses a ``--target`` value (see the module docstring) into a replica source."""
    scheme, rest = _split_scheme(spec.strip())
    if scheme == "static":
        return StaticReplicas(part for part in rest.split(",") if part.strip())
    if scheme == "dns":
        host, port = parse_address(rest)
        return DnsReplicas(host, port, interval_seconds=dns_interval_seconds)
    if scheme == "kubernetes":
        name, sep, port_name = rest.rpartition(":")
        service, dot, namespace = name.partition(".")
        if not sep or not dot or not port_name:
            raise InvalidArgumentError(
                SPEC_FIELD, f"expected kubernetes:///SERVICE.NAMESPACE:PORT, got {spec!r}"
            )
        return EndpointSliceReplicas(namespace, service, port_name)
    raise InvalidArgumentError(
        SPEC_FIELD, f"unknown scheme {scheme!r} in {spec!r}; use HOST:PORT,..., dns:///, or kubernetes:///"
    )
