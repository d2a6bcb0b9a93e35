"""EndpointSlice discovery with the real ``kubernetes`` client against a local API server over HTTP.

The server speaks the list/watch protocol of ``/apis/discovery.k8s.io/v1/namespaces/NS/endpointslices``:
a list carries ``metadata.resourceVersion``; a watch is a chunked stream of JSON lines ``{type, object}``
from a resourceVersion on; a resourceVersion older than the compaction point gets an ERROR event with
code 410. Tests drive it (apply, delete, drop the watch, compact) and observe the requests it served.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from kubernetes import client

from coordinator.discovery import DiscoveryError, EndpointSliceReplicas

NAMESPACE = "inference"
SERVICE = "polyspec-target"
PATH = f"/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices"
STEP_TIMEOUT = 20.0

_END = "end"
_DROP = "drop"


def endpoint_slice(
    name: str, ready: dict[str, bool | None], service: str = SERVICE, port_name: str = "grpc"
) -> dict[str, Any]:
    """An EndpointSlice with one endpoint per address; ``None`` leaves the ready condition unset."""
    endpoints = []
    for address, is_ready in ready.items():
        conditions = {} if is_ready is None else {"ready": is_ready, "terminating": not is_ready}
        endpoints.append({"addresses": [address], "conditions": conditions})
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "ports": [{"name": port_name, "port": 50052, "protocol": "TCP"}],
        "endpoints": endpoints,
    }


class FakeEndpointSliceApi:
    """In-memory EndpointSlices with a resourceVersion counter, an event history and live watchers."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.version = 1
        self.compacted = 0
        self.slices: dict[str, dict[str, Any]] = {}
        self.history: list[tuple[int, dict[str, Any]]] = []
        self.watchers: set[queue.Queue[Any]] = set()
        self.requests: queue.Queue[tuple[str, str]] = queue.Queue()
        self.failures: queue.Queue[int] = queue.Queue()
        self.gate = threading.Event()
        self.gate.set()

    def _publish(self, kind: str, obj: dict[str, Any]) -> None:
        event = {"type": kind, "object": obj}
        self.history.append((self.version, event))
        for watcher in self.watchers:
            watcher.put(event)

    def apply(self, obj: dict[str, Any]) -> None:
        with self.lock:
            self.version += 1
            obj = json.loads(json.dumps(obj))
            obj["metadata"]["resourceVersion"] = str(self.version)
            kind = "MODIFIED" if obj["metadata"]["name"] in self.slices else "ADDED"
            self.slices[obj["metadata"]["name"]] = obj
            self._publish(kind, obj)

    def delete(self, name: str) -> None:
        with self.lock:
            self.version += 1
            obj = self.slices.pop(name)
            obj["metadata"]["resourceVersion"] = str(self.version)
            self._publish("DELETED", obj)

    def publish_raw(self, event: dict[str, Any]) -> None:
        """Sends an event as is to the watchers (for answers no real server gives)."""
        with self.lock:
            for watcher in self.watchers:
                watcher.put(event)

    def bookmark(self) -> None:
        """Advances the resourceVersion without a change and tells the watchers."""
        with self.lock:
            self.version += 1
            mark = {"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1"}
            mark["metadata"] = {"resourceVersion": str(self.version)}  # type: ignore[assignment]
            for watcher in self.watchers:
                watcher.put({"type": "BOOKMARK", "object": mark})

    def compact(self) -> None:
        """Forgets the history: watches from any older resourceVersion get 410 Gone."""
        with self.lock:
            self.compacted = self.version
            self.history.clear()

    def drop_watches(self) -> None:
        with self.lock:
            for watcher in self.watchers:
                watcher.put(_DROP)

    def end_all(self) -> None:
        self.gate.set()
        with self.lock:
            for watcher in self.watchers:
                watcher.put(_END)

    def listing(self, selector: str) -> dict[str, Any]:
        with self.lock:
            self.requests.put(("list", str(self.version)))
            items = [s for s in self.slices.values() if _selected(s, selector)]
            return {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSliceList",
                "metadata": {"resourceVersion": str(self.version)},
                "items": items,
            }

    def subscribe(self, since: int) -> tuple[queue.Queue[Any], list[dict[str, Any]] | None]:
        """Registers a watcher; returns it and the events after ``since`` (None when too old).

        While the gate is closed a watch request is recorded as ``held`` and waits for it to open.
        """
        watcher: queue.Queue[Any] = queue.Queue()
        if not self.gate.is_set():
            self.requests.put(("held", str(since)))
            self.gate.wait()
        with self.lock:
            self.requests.put(("watch", str(since)))
            if since < self.compacted:
                return watcher, None
            self.watchers.add(watcher)
            return watcher, [event for version, event in self.history if version > since]

    def unsubscribe(self, watcher: queue.Queue[Any]) -> None:
        with self.lock:
            self.watchers.discard(watcher)


def _selected(obj: dict[str, Any], selector: str) -> bool:
    key, _, value = selector.partition("=")
    if not selector or "metadata" not in obj:  # malformed objects go to every watcher
        return True
    return bool(obj["metadata"].get("labels", {}).get(key) == value)


def _handler(api: FakeEndpointSliceApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_GET(self) -> None:
            url = urlparse(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if url.path != PATH:
                self._send_json(404, {"kind": "Status", "code": 404, "message": "not found"})
            elif query.get("watch") == "true":
                self._watch(query)
            else:
                with contextlib.suppress(queue.Empty):
                    status = api.failures.get_nowait()
                    self._send_json(status, {"kind": "Status", "code": status, "message": "injected"})
                    return
                self._send_json(200, api.listing(query.get("labelSelector", "")))

        def _send_json(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _chunk(self, event: dict[str, Any]) -> None:
            line = json.dumps(event).encode() + b"\n"
            self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
            self.wfile.flush()

        def _watch(self, query: dict[str, str]) -> None:
            selector = query.get("labelSelector", "")
            watcher, backlog = api.subscribe(int(query.get("resourceVersion", "0") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                if backlog is None:
                    gone = {"kind": "Status", "status": "Failure", "reason": "Expired", "code": 410}
                    self._chunk({"type": "ERROR", "object": {**gone, "message": "too old resource version"}})
                else:
                    self._follow(watcher, backlog, selector)
                    if self.close_connection:
                        return
                self.wfile.write(b"0\r\n\r\n")
            finally:
                api.unsubscribe(watcher)

        def _follow(self, watcher: queue.Queue[Any], backlog: list[dict[str, Any]], selector: str) -> None:
            for event in backlog:
                if _selected(event["object"], selector):
                    self._chunk(event)
            while True:
                event = watcher.get()
                if event == _END:
                    return
                if event == _DROP:  # vanish mid-stream, as a broken connection would
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if event["type"] == "BOOKMARK" or _selected(event["object"], selector):
                    self._chunk(event)

    return Handler


@pytest.fixture
def fake_api() -> Iterator[tuple[FakeEndpointSliceApi, str]]:
    api = FakeEndpointSliceApi()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="fake-kube-api", daemon=True)
    thread.start()
    try:
        yield api, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        api.end_all()
        server.shutdown()
        server.server_close()
        thread.join(STEP_TIMEOUT)


@pytest.fixture
def api_client(fake_api: tuple[FakeEndpointSliceApi, str]) -> Iterator[Any]:
    configuration = client.Configuration()
    configuration.host = fake_api[1]
    api = client.ApiClient(configuration)
    try:
        yield api
    finally:
        api.close()  # type: ignore[no-untyped-call]


def _source(api_client: Any) -> EndpointSliceReplicas:
    return EndpointSliceReplicas(
        NAMESPACE,
        SERVICE,
        "grpc",
        api_client=api_client,
        watch_timeout_seconds=60,
        request_timeout_seconds=90.0,
        backoff_seconds=(0.01, 0.05),
    )


async def _until(updates: AsyncIterator[frozenset[str]], expected: set[str]) -> None:
    """Consumes sets until ``expected`` arrives (bounded)."""

    async def wait() -> None:
        async for current in updates:
            if current == expected:
                return
        raise AssertionError("updates ended")

    await asyncio.wait_for(wait(), STEP_TIMEOUT)


async def _request(api: FakeEndpointSliceApi) -> tuple[str, str]:
    """The next request the API served: ``(list|watch, resourceVersion)``."""
    return await asyncio.to_thread(api.requests.get, True, STEP_TIMEOUT)


async def _watching(api: FakeEndpointSliceApi) -> str:
    """Skips to the next watch request; returns the resourceVersion it started from."""
    while True:
        kind, version = await _request(api)
        if kind == "watch":
            return version


def _discovery_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"endpointslices-{SERVICE}"]


async def test_first_set_lists_ready_endpoints_of_the_service_only(
    fake_api: tuple[FakeEndpointSliceApi, str], api_client: Any
) -> None:
    api, _ = fake_api
    api.apply(endpoint_slice("t-a", {"10.0.0.1": True, "10.0.0.2": False, "10.0.0.3": None}))
    api.apply(endpoint_slice("t-b", {"10.0.1.1": True}, port_name="metrics"))
    api.apply(endpoint_slice("other", {"10.9.9.9": True}, service="polyspec-drafter"))
    async with contextlib.aclosing(_source(api_client).updates()) as updates:
        first = await asyncio.wait_for(anext(updates), STEP_TIMEOUT)
    assert first == {"10.0.0.1:50052", "10.0.0.3:50052"}
    assert await _request(api) == ("list", "4")


async def test_adds_readiness_changes_and_removals_arrive_live(
    fake_api: tuple[FakeEndpointSliceApi, str], api_client: Any
) -> None:
    api, _ = fake_api
    async with contextlib.aclosing(_source(api_client).updates()) as updates:
        assert await asyncio.wait_for(anext(updates), STEP_TIMEOUT) == frozenset()
        api.apply(endpoint_slice("t-a", {"10.0.0.1": True, "10.0.0.2": False}))
        await _until(updates, {"10.0.0.1:50052"})
        api.apply(endpoint_slice("t-a", {"10.0.0.1": True, "10.0.0.2": True}))
        await _until(updates, {"10.0.0.1:50052", "10.0.0.2:50052"})
        api.apply(endpoint_slice("t-b", {"10.0.1.1": True}))
        await _until(updates, {"10.0.0.1:50052", "10.0.0.2:50052", "10.0.1.1:50052"})
        api.apply(endpoint_slice("t-a", {"10.0.0.1": False, "10.0.0.2": True}))  # terminating
        await _until(updates, {"10.0.0.2:50052", "10.0.1.1:50052"})
        api.delete("t-a")
        await _until(updates, {"10.0.1.1:50052"})
        api.apply(endpoint_slice("other", {"10.9.9.9": True}, service="polyspec-drafter"))
        api.delete("t-b")
        await _until(updates, set())


async def test_a_dropped_or_ended_watch_resumes_from_the_last_resource_version(
    fake_api: tuple[FakeEndpointSliceApi, str], api_client: Any
) -> None:
    api, _ = fake_api
    api.apply(endpoint_slice("t-a", {"10.0.0.1": True}))
    async with contextlib.aclosing(_source(api_client).updates()) as updates:
        await _until(updates, {"10.0.0.1:50052"})
        assert await _request(api) == ("list", "2")
        assert await _request(api) == ("watch", "2")
        api.apply(endpoint_slice("t-b", {"10.0.1.1": True}))
        await _until(updates, {"10.0.0.1:50052", "10.0.1.1:50052"})
        api.drop_watches()
        assert await _request(api) == ("watch", "3")  # resumed, not relisted
        api.bookmark()
        api.drop_watches()
        assert await _request(api) == ("watch", "4")  # a bookmark moves the resume point too
        api.end_all()  # the server's watch timeout: a clean end
        assert await _request(api) == ("watch", "4")
        api.delete("t-a")
        await _until(updates, {"10.0.1.1:50052"})
    assert api.requests.empty()


async def test_410_gone_relists_and_catches_up(
    fake_api: tuple[FakeEndpointSliceApi, str], api_client: Any
) -> None:
    api, _ = fake_api
    api.apply(endpoint_slice("t-a", {"10.0.0.1": True}))
    api.apply(endpoint_slice("t-b", {"10.0.1.1": True}))
    async with contextlib.aclosing(_source(api_client).updates()) as updates:
        await _until(updates, {"10.0.0.1:50052", "10.0.1.1:50052"})
        assert await _watching(api) == "3"
        api.gate.clear()
        api.drop_watches()
        assert await _request(api) == ("held", "3")
        api.delete("t-a")  # while disconnected the cluster moves on and compacts its history
        api.apply(endpoint_slice("t-c", {"10.0.2.1": True}))
        api.compact()
        api.gate.set()
        assert await _request(api) == ("watch", "3")  # too old now: 410
        assert await _request(api) == ("list", "5")
        assert await _request(api) == ("watch", "5")
        await _until(updates, {"10.0.1.1:50052", "10.0.2.1:50052"})


async def test_a_failing_list_is_retried(fake_api: tuple[FakeEndpointSliceApi, str], api_client: Any) -> None:
    api, _ = fake_api
    api.apply(endpoint_slice("t-a", {"10.0.0.1": True}))
    api.failures.put(500)
    api.failures.put(403)
    async with contextlib.aclosing(_source(api_client).updates()) as updates:
        assert await asyncio.wait_for(anext(updates), STEP_TIMEOUT) == {"10.0.0.1:50052"}
    assert api.failures.empty()


async def test_closing_the_updates_stops_the_watch_thread(
    fake_api: tuple[FakeEndpointSliceApi, str], api_client: Any
) -> None:
    api, _ = fake_api
    updates = _source(api_client).updates()
    assert await asyncio.wait_for(anext(updates), STEP_TIMEOUT) == frozenset()
    await _watching(api)
    assert len(_discovery_threads()) == 1
    await asyncio.wait_for(updates.aclose(), STEP_TIMEOUT)
    assert _discovery_threads() == []


async def test_an_unexpected_answer_fails_the_updates_instead_of_going_quiet(
    fake_api: tuple[FakeEndpointSliceApi, str], api_client: Any
) -> None:
    api, _ = fake_api
    async with contextlib.aclosing(_source(api_client).updates()) as updates:
        assert await asyncio.wait_for(anext(updates), STEP_TIMEOUT) == frozenset()
        await _watching(api)
        nameless = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4"}
        api.publish_raw({"type": "ADDED", "object": {**nameless, "endpoints": []}})
        with pytest.raises(DiscoveryError, match=f"{NAMESPACE}/{SERVICE}"):
            await asyncio.wait_for(anext(updates), STEP_TIMEOUT)
    assert _discovery_threads() == []
