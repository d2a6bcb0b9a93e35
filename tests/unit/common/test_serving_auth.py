"""The optional bearer-token check: UNAUTHENTICATED without the token; health and reflection stay open."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from core.serving.auth import BearerTokenInterceptor, TokenError, load_token
from core.serving.server import GrpcServerSettings, RunningServer, start_server

SERVICE = "polyspec.test.Echo"
TOKEN = "s3cret-Token_value.42"


def _identity(value: bytes) -> bytes:
    return value


async def _echo(request: bytes, context: Any) -> bytes:
    return request


async def _stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    yield request
    yield request


def _register(server: grpc.aio.Server) -> None:
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(
                _echo, request_deserializer=_identity, response_serializer=_identity
            ),
            "Stream": grpc.unary_stream_rpc_method_handler(
                _stream, request_deserializer=_identity, response_serializer=_identity
            ),
        },
    )
    server.add_generic_rpc_handlers((handler,))


@pytest.fixture
async def channel() -> AsyncIterator[grpc.aio.Channel]:
    settings = GrpcServerSettings(port=0, shutdown_grace_seconds=0.0)
    server: RunningServer = await start_server(
        settings, [_register], [SERVICE], interceptors=[BearerTokenInterceptor(TOKEN)]
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as opened:
            yield opened
    finally:
        await server.stop(0)


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ((), "requires a bearer token"),
        (_bearer("wrong"), "not valid"),
        ((("authorization", TOKEN),), "not valid"),  # no "Bearer " scheme
        (_bearer(TOKEN) + _bearer(TOKEN), "not valid"),  # ambiguous: two of them
    ],
)
async def test_calls_without_the_token_are_unauthenticated(
    channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...], message: str
) -> None:
    unary = channel.unary_unary(
        f"/{SERVICE}/Unary", request_serializer=_identity, response_deserializer=_identity
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await unary(b"hi", metadata=metadata, timeout=5)
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert message in (info.value.details() or "")
    assert TOKEN not in (info.value.details() or "")
    stream = channel.unary_stream(
        f"/{SERVICE}/Stream", request_serializer=_identity, response_deserializer=_identity
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stream(b"hi", metadata=metadata, timeout=5):
            pass
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_the_token_is_accepted(channel: grpc.aio.Channel) -> None:
    unary = channel.unary_unary(
        f"/{SERVICE}/Unary", request_serializer=_identity, response_deserializer=_identity
    )
    assert await unary(b"hi", metadata=_bearer(TOKEN), timeout=5) == b"hi"
    stream = channel.unary_stream(
        f"/{SERVICE}/Stream", request_serializer=_identity, response_deserializer=_identity
    )
    assert [item async for item in stream(b"hi", metadata=_bearer(TOKEN), timeout=5)] == [b"hi", b"hi"]


async def test_health_and_reflection_stay_open(channel: grpc.aio.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    names = set()
    async for response in stub.ServerReflectionInfo(iter([request]), timeout=5):
        names |= {s.name for s in response.list_services_response.service}
    assert SERVICE in names


def test_the_token_comes_from_a_file_or_a_variable(tmp_path: Path) -> None:
    file = tmp_path / "token"
    file.write_text(f"{TOKEN}\n")  # a Secret's trailing newline is not part of the token
    assert load_token(file, None) == TOKEN
    assert load_token(None, "POLYSPEC_TOKEN", {"POLYSPEC_TOKEN": TOKEN}) == TOKEN
    assert load_token(None, None) is None


@pytest.mark.parametrize(
    ("content", "env", "message"),
    [
        (None, "UNSET", "UNSET .* is not set"),
        ("", None, "holds an empty token"),
        ("two words", None, "printable ASCII without spaces"),
        ("tok\u00e9n", None, "printable ASCII without spaces"),
    ],
)
def test_unusable_token_sources_are_refused(
    tmp_path: Path, content: str | None, env: str | None, message: str
) -> None:
    file = None
    if content is not None:
        file = tmp_path / "token"
        file.write_text(content)
    with pytest.raises(TokenError, match=message):
        load_token(file, env, {})


def test_a_missing_token_file_and_both_sources_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TokenError, match="cannot read the token file"):
        load_token(tmp_path / "absent", None)
    with pytest.raises(TokenError, match="not both"):
        load_token(tmp_path / "absent", "VAR")
