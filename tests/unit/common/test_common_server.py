"""The shared server furniture: error mapping, health, reflection, graceful stop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from core.errors import InvalidArgumentError, ResourceExhaustedError, UnavailableError
from core.serving.server import GrpcServerSettings, RunningServer, start_server

SERVICE = "polyspec.test.Echo"


def _identity(value: bytes) -> bytes:
    return value


async def _unary(request: bytes, context: Any) -> bytes:
    if request == b"bad":
        raise InvalidArgumentError("prompt", "must not be empty")
    if request == b"busy":
        raise ResourceExhaustedError("cache budget exceeded")
    if request == b"down":
        raise UnavailableError("drafter at 127.0.0.1:1 is unavailable")
    if request == b"bug":
        raise RuntimeError("secret internal detail")
    return request


async def _stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    yield b"first"
    if request == b"bad":
        raise InvalidArgumentError("max_new_tokens", "must be >= 1, got 0")
    yield b"second"


def _register(server: grpc.aio.Server) -> None:
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(
                _unary, request_deserializer=_identity, response_serializer=_identity
            ),
            "Stream": grpc.unary_stream_rpc_method_handler(
                _stream, request_deserializer=_identity, response_serializer=_identity
            ),
        },
    )
    server.add_generic_rpc_handlers((handler,))


@pytest.fixture
async def running() -> AsyncIterator[RunningServer]:
    server = await start_server(GrpcServerSettings(port=0), [_register], [SERVICE])
    try:
        yield server
    finally:
        await server.stop(grace=0)


async def _call(port: int, payload: bytes) -> bytes:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        method = channel.unary_unary(
            f"/{SERVICE}/Unary", request_serializer=_identity, response_deserializer=_identity
        )
        result: bytes = await method(payload, timeout=10)
        return result


@pytest.mark.parametrize(
    ("payload", "code", "text"),
    [
        (b"bad", grpc.StatusCode.INVALID_ARGUMENT, "prompt: must not be empty"),
        (b"busy", grpc.StatusCode.RESOURCE_EXHAUSTED, "cache budget exceeded"),
        (b"down", grpc.StatusCode.UNAVAILABLE, "drafter at 127.0.0.1:1"),
        (b"bug", grpc.StatusCode.INTERNAL, "internal error"),
    ],
)
async def test_domain_errors_map_to_status_codes(
    running: RunningServer, payload: bytes, code: grpc.StatusCode, text: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _call(running.port, payload)
    assert info.value.code() == code
    assert text in (info.value.details() or "")
    assert "secret" not in (info.value.details() or "")


async def test_success_passes_through(running: RunningServer) -> None:
    assert await _call(running.port, b"hello") == b"hello"


async def test_stream_error_after_first_message(running: RunningServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        method = channel.unary_stream(
            f"/{SERVICE}/Stream", request_serializer=_identity, response_deserializer=_identity
        )
        received = []
        with pytest.raises(grpc.aio.AioRpcError) as info:
            async for item in method(b"bad", timeout=10):
                received.append(item)
    assert received == [b"first"]
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_new_tokens" in (info.value.details() or "")


async def test_health_and_reflection(running: RunningServer) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        await running.set_serving(False)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING

        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        names = set()
        async for response in stub.ServerReflectionInfo(iter([request])):
            names |= {s.name for s in response.list_services_response.service}
        assert {SERVICE, "grpc.health.v1.Health"} <= names
