"""The shared server furniture: error mapping, health, reflection, graceful stop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2  # type: ignore[import-untyped]  # no py.typed
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from core.errors import (
    ERROR_DOMAIN,
    ContextMissError,
    ErrorReason,
    InvalidArgumentError,
    PolyspecError,
    ResourceExhaustedError,
    UnavailableError,
    UnknownTokenMaskError,
)
from core.serving.server import GrpcServerSettings, RunningServer, start_server
from core.serving.status import error_reason

SERVICE = "polyspec.test.Echo"


def _identity(value: bytes) -> bytes:
    return value


async def _unary(request: bytes, context: Any) -> bytes:
    if request == b"miss":
        raise ContextMissError("sequence 's': the cached prefix is not held")
    if request == b"mask":
        raise UnknownTokenMaskError("token_mask_id 'm' is not registered; register it with SetTokenMask")
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
    ("payload", "code", "text", "reason"),
    [
        (b"bad", grpc.StatusCode.INVALID_ARGUMENT, "prompt: must not be empty", ErrorReason.INVALID_ARGUMENT),
        (
            b"busy",
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "cache budget exceeded",
            ErrorReason.RESOURCE_EXHAUSTED,
        ),
        (b"down", grpc.StatusCode.UNAVAILABLE, "drafter at 127.0.0.1:1", ErrorReason.UNAVAILABLE),
        (b"miss", grpc.StatusCode.FAILED_PRECONDITION, "not held", ErrorReason.CONTEXT_MISS),
        (b"mask", grpc.StatusCode.FAILED_PRECONDITION, "SetTokenMask", ErrorReason.UNKNOWN_TOKEN_MASK),
        (b"bug", grpc.StatusCode.INTERNAL, "internal error", None),
    ],
)
async def test_domain_errors_map_to_status_codes_and_reasons(
    running: RunningServer, payload: bytes, code: grpc.StatusCode, text: str, reason: ErrorReason | None
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _call(running.port, payload)
    assert info.value.code() == code
    assert text in (info.value.details() or "")
    assert "secret" not in (info.value.details() or "")
    assert error_reason(info.value) is reason


async def test_the_reason_is_a_standard_error_info_in_the_status_details(running: RunningServer) -> None:
    """Any gRPC client reads it with grpc_status; invalid arguments name the field in its metadata."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        method = channel.unary_unary(
            f"/{SERVICE}/Unary", request_serializer=_identity, response_deserializer=_identity
        )
        call = method(b"bad", timeout=10)
        with pytest.raises(grpc.aio.AioRpcError):
            await call
        status = await rpc_status.aio.from_call(call)  # type: ignore[attr-defined]  # not in grpc-stubs
    assert status is not None
    assert (status.code, status.message) == (3, "prompt: must not be empty")  # 3 = INVALID_ARGUMENT
    assert len(status.details) == 1
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert (info.domain, info.reason, dict(info.metadata)) == (
        ERROR_DOMAIN,
        "INVALID_ARGUMENT",
        {"field": "prompt"},
    )


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
    assert error_reason(info.value) is ErrorReason.INVALID_ARGUMENT


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


def test_every_domain_error_has_its_own_reason() -> None:
    """Each PolyspecError subclass in the product names its own ErrorInfo reason (distinct, stable)."""
    import coordinator.admission
    import coordinator.pair
    import services.modelstore.errors

    def subclasses(cls: type[PolyspecError]) -> list[type[PolyspecError]]:
        return [cls, *(sub for direct in cls.__subclasses__() for sub in subclasses(direct))]

    product = [
        cls
        for cls in subclasses(PolyspecError)
        if cls.__module__.split(".")[0] in {"core", "coordinator", "services"}
    ]
    expected = {
        coordinator.admission.AdmissionRefusedError,
        coordinator.pair.PairMismatchError,
        services.modelstore.errors.UnknownModelError,
    }
    assert expected <= set(product)
    reasons = {cls: cls.error_reason for cls in product}
    assert all("error_reason" in vars(cls) for cls in product if cls is not PolyspecError), reasons
    assert len(set(reasons.values())) == len(reasons), reasons
