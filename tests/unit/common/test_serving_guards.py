"""Server guards: undecodable requests, the acceptance marker, message caps, the connection-age limit, and
a stop that waits for the handlers it cut to run their cleanup."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from polyspec.v1 import coordinator_pb2

from core.errors import ErrorReason
from core.serving.interceptor import ACCEPTED_METADATA, mark_accepted
from core.serving.server import GrpcServerSettings, MiB, RunningServer, start_server
from core.serving.status import error_reason
from core.serving.tls import open_channel

SERVICE = "polyspec.test.Echo"
OTHER = "polyspec.test.Other"
GARBAGE = b"\xff\xff\xff\xff"  # not a valid protobuf encoding of any message with fields
CLEANED: list[str] = []  # what the slow handler's cleanup recorded


def _identity(value: bytes) -> bytes:
    return value


def _serialize(message: Any) -> bytes:
    data: bytes = message.SerializeToString()
    return data


async def _other(request: coordinator_pb2.GenerateRequest, context: Any) -> bytes:
    """A handler that fails without sending the marker."""
    await context.abort(grpc.StatusCode.UNAVAILABLE, "a model service is down")
    return b""


async def _typed(request: coordinator_pb2.GenerateRequest, context: Any) -> bytes:
    await mark_accepted(context)
    if request.prompt == "fail":
        await context.abort(grpc.StatusCode.UNAVAILABLE, "a model service is down")
    return request.prompt.encode() * request.max_new_tokens


async def _typed_stream(request: coordinator_pb2.GenerateRequest, context: Any) -> AsyncIterator[bytes]:
    await mark_accepted(context)
    if request.prompt == "slow":
        try:
            await asyncio.sleep(30)
        finally:  # cleanup that outlives the cancellation, as a coordinator's cache release does
            await asyncio.sleep(0.2)
            CLEANED.append(request.prompt)
    for index in range(request.max_new_tokens):
        if index:
            await asyncio.sleep(0.25)
        yield request.prompt.encode()


def _register(server: grpc.aio.Server) -> None:
    parse = coordinator_pb2.GenerateRequest.FromString
    methods = {
        "Unary": grpc.unary_unary_rpc_method_handler(
            _typed, request_deserializer=parse, response_serializer=_identity
        ),
        "Stream": grpc.unary_stream_rpc_method_handler(
            _typed_stream, request_deserializer=parse, response_serializer=_identity
        ),
    }
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(SERVICE, methods),
            grpc.method_handlers_generic_handler(
                OTHER,
                {
                    "Unary": grpc.unary_unary_rpc_method_handler(
                        _other, request_deserializer=parse, response_serializer=_identity
                    )
                },
            ),
        )
    )


@pytest.fixture
async def serve() -> AsyncIterator[Any]:
    started: list[RunningServer] = []

    async def start(**fields: Any) -> RunningServer:
        settings = GrpcServerSettings(port=0, shutdown_grace_seconds=0.0, **fields)
        server = await start_server(settings, [_register], [SERVICE])
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop(0)


def _unary(channel: grpc.aio.Channel, service: str = SERVICE, raw: bool = False) -> Any:
    return channel.unary_unary(
        f"/{service}/Unary",
        request_serializer=_identity if raw else _serialize,
        response_deserializer=_identity,
    )


def _stream(channel: grpc.aio.Channel, raw: bool = False) -> Any:
    return channel.unary_stream(
        f"/{SERVICE}/Stream",
        request_serializer=_identity if raw else _serialize,
        response_deserializer=_identity,
    )


async def test_undecodable_requests_are_invalid_argument(serve: Any) -> None:
    server = await serve()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _unary(channel, raw=True)(GARBAGE, timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (info.value.details() or "").startswith(
            "request: the bytes do not parse as a polyspec.v1.GenerateRequest message"
        )
        assert error_reason(info.value) is ErrorReason.INVALID_ARGUMENT
        assert ACCEPTED_METADATA not in tuple(info.value.initial_metadata() or ())
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for _ in _stream(channel, raw=True)(GARBAGE, timeout=5):
                pass
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # The server is unharmed.
        request = coordinator_pb2.GenerateRequest(prompt="ok", max_new_tokens=2)
        assert await _unary(channel)(request, timeout=5) == b"okok"


async def test_the_acceptance_marker_comes_once_the_handler_sends_it(serve: Any) -> None:
    """A failure after the handler marked the call carries the marker; a handler that did not, lacks it."""
    server = await serve()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        call = _unary(channel)(coordinator_pb2.GenerateRequest(prompt="fail"), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert ACCEPTED_METADATA in tuple(info.value.initial_metadata() or ())
        stream = _stream(channel)(coordinator_pb2.GenerateRequest(prompt="a", max_new_tokens=1), timeout=5)
        assert [item async for item in stream] == [b"a"]
        assert ACCEPTED_METADATA in tuple(await stream.initial_metadata() or ())
        other = _unary(channel, OTHER)(coordinator_pb2.GenerateRequest(prompt="fail"), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await other
        assert ACCEPTED_METADATA not in tuple(info.value.initial_metadata() or ())


async def test_message_caps_apply_both_ways(serve: Any) -> None:
    server = await serve(max_message_bytes=MiB)
    address = f"127.0.0.1:{server.port}"
    big = coordinator_pb2.GenerateRequest(prompt="x" * (MiB + 10), max_new_tokens=1)
    async with open_channel(address, max_message_bytes=4 * MiB) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:  # the server refuses to receive it
            await _unary(channel)(big, timeout=5)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with pytest.raises(grpc.aio.AioRpcError) as info:  # the server refuses to send 2 MiB
            await _unary(channel)(
                coordinator_pb2.GenerateRequest(prompt="y" * MiB, max_new_tokens=2), timeout=5
            )
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    async with open_channel(address, max_message_bytes=MiB) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as info:  # the channel refuses to send it
            await _unary(channel)(big, timeout=5)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        half = coordinator_pb2.GenerateRequest(prompt="z" * (MiB // 2), max_new_tokens=1)
        assert len(await _unary(channel)(half, timeout=5)) == MiB // 2


async def _stream_for(port: int, messages: int) -> tuple[int, grpc.StatusCode | None, float]:
    """Received messages, the failure code (None: completed) and the seconds the stream took."""
    started = time.monotonic()
    received = 0
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        request = coordinator_pb2.GenerateRequest(prompt="t", max_new_tokens=messages)
        try:
            async for _ in _stream(channel)(request, timeout=30):
                received += 1
        except grpc.aio.AioRpcError as exc:
            return received, exc.code(), time.monotonic() - started
    return received, None, time.monotonic() - started


async def test_the_connection_age_limit_never_cuts_a_live_stream_by_default(serve: Any) -> None:
    """By default the grace after the age limit is unlimited: a stream longer than the age completes."""
    assert GrpcServerSettings().max_connection_age_grace_ms is None
    server = await serve(max_connection_age_ms=500)
    received, failure, seconds = await _stream_for(server.port, 9)  # about 2 s, four connection ages
    assert (received, failure) == (9, None)
    assert seconds > 1.5


async def test_a_finite_grace_does_cut_a_stream(serve: Any) -> None:
    """The contrast that shows the age limit is live in these tests."""
    server = await serve(max_connection_age_ms=500, max_connection_age_grace_ms=200)
    received, failure, _ = await _stream_for(server.port, 12)
    assert failure == grpc.StatusCode.UNAVAILABLE
    assert 0 < received < 12


def test_connection_age_zero_turns_the_limit_off() -> None:
    from core.serving.server import _server_options

    options = dict(_server_options(GrpcServerSettings(max_connection_age_ms=0)))
    assert "grpc.max_connection_age_ms" not in options
    options = dict(_server_options(GrpcServerSettings()))
    assert options["grpc.max_connection_age_ms"] == 30 * 60_000
    assert options["grpc.max_connection_age_grace_ms"] == 2**31 - 1


async def test_a_stop_waits_for_the_handlers_it_cut_to_clean_up(serve: Any) -> None:
    server = await serve()
    CLEANED.clear()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        request = coordinator_pb2.GenerateRequest(prompt="slow", max_new_tokens=1)
        stream = _stream(channel)(request, timeout=30)
        assert ACCEPTED_METADATA in tuple(await stream.initial_metadata() or ())
        await server.stop(0)
        assert CLEANED == ["slow"]  # the cut handler's cleanup ran before stop returned
        assert not server.handlers.running
        with pytest.raises(grpc.aio.AioRpcError):
            async for _ in stream:
                pass
