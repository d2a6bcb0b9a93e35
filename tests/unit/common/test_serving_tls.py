"""TLS and mutual TLS of the shared server factory, the plaintext health port, channel TLS settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from core.serving.server import GrpcServerSettings, RunningServer, start_server
from core.serving.tls import ClientTLS, ServerTLS, TLSFileError, open_channel, server_credentials
from tests.support.certs import SERVER_NAME, Pki, make_test_pki

SERVICE = "polyspec.test.Echo"


def _identity(value: bytes) -> bytes:
    return value


async def _echo(request: bytes, context: Any) -> bytes:
    return request


def _register(server: grpc.aio.Server) -> None:
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(
                _echo, request_deserializer=_identity, response_serializer=_identity
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


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


async def _echo_call(channel: grpc.aio.Channel, payload: bytes = b"hello") -> bytes:
    method = channel.unary_unary(
        f"/{SERVICE}/Unary", request_serializer=_identity, response_deserializer=_identity
    )
    result: bytes = await method(payload, timeout=5)
    return result


async def _refused(channel: grpc.aio.Channel) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _echo_call(channel)
    await channel.close(None)
    return info.value.code()


async def test_tls_round_trip_and_plaintext_refused(serve: Any, pki: Pki) -> None:
    server = await serve(tls=ServerTLS(cert_file=pki.server_crt, key_file=pki.server_key))
    address = f"127.0.0.1:{server.port}"
    async with open_channel(address, tls=ClientTLS(ca_file=pki.ca_crt)) as channel:
        assert await _echo_call(channel) == b"hello"
    assert await _refused(grpc.aio.insecure_channel(address)) == grpc.StatusCode.UNAVAILABLE
    # The system's roots do not know the test CA.
    assert await _refused(open_channel(address, tls=ClientTLS())) == grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_needs_a_client_certificate_from_the_ca(serve: Any, pki: Pki) -> None:
    mutual = ServerTLS(cert_file=pki.server_crt, key_file=pki.server_key, client_ca_file=pki.ca_crt)
    assert mutual.mutual
    server = await serve(tls=mutual)
    address = f"127.0.0.1:{server.port}"
    client = ClientTLS(ca_file=pki.ca_crt, cert_file=pki.client_crt, key_file=pki.client_key)
    async with open_channel(address, tls=client) as channel:
        assert await _echo_call(channel) == b"hello"
    no_certificate = open_channel(address, tls=ClientTLS(ca_file=pki.ca_crt))
    assert await _refused(no_certificate) == grpc.StatusCode.UNAVAILABLE
    rogue = ClientTLS(ca_file=pki.ca_crt, cert_file=pki.rogue_client_crt, key_file=pki.rogue_client_key)
    assert await _refused(open_channel(address, tls=rogue)) == grpc.StatusCode.UNAVAILABLE


async def test_the_server_name_override_checks_another_name(serve: Any, pki: Pki) -> None:
    """Replicas reached by IP: the certificate is checked for the configured name instead."""
    server = await serve(tls=ServerTLS(cert_file=pki.server_crt, key_file=pki.server_key))
    address = f"127.0.0.1:{server.port}"
    named = ClientTLS(ca_file=pki.ca_crt, server_name=SERVER_NAME)
    async with open_channel(address, tls=named) as channel:
        assert await _echo_call(channel) == b"hello"
    wrong = ClientTLS(ca_file=pki.ca_crt, server_name="elsewhere.polyspec.test")
    assert await _refused(open_channel(address, tls=wrong)) == grpc.StatusCode.UNAVAILABLE


async def test_the_health_port_speaks_plaintext_next_to_tls(serve: Any, pki: Pki) -> None:
    """kubelet's gRPC probes cannot speak TLS: health alone is served in plaintext on its own port."""
    server = await serve(tls=ServerTLS(cert_file=pki.server_crt, key_file=pki.server_key), health_port=0)
    assert server.health_port not in (None, 0, server.port)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.health_port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        await server.set_serving(False)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(grpc.aio.AioRpcError) as info:  # only health lives there
            await _echo_call(channel)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_unreadable_certificate_files_name_the_setting(tmp_path: Path, pki: Pki) -> None:
    with pytest.raises(TLSFileError, match=r"^tls cert_file: cannot read .*missing\.crt"):
        server_credentials(ServerTLS(cert_file=tmp_path / "missing.crt", key_file=pki.server_key))
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    with pytest.raises(TLSFileError, match=r"tls client_ca_file: .* is not a PEM file"):
        server_credentials(
            ServerTLS(cert_file=pki.server_crt, key_file=pki.server_key, client_ca_file=not_pem)
        )


def test_a_client_certificate_needs_its_key(pki: Pki) -> None:
    with pytest.raises(ValueError, match="both cert_file and key_file"):
        ClientTLS(cert_file=pki.client_crt)
