"""The model service under a saturated queue, undecodable requests, TLS, and its transport flags.

Housekeeping (Release, Info, SetTokenMask, health, the idle sweep) must neither wait behind forwards
nor be refused by the bounded queue of forwards: under overload a refused Release left cached
sequences behind until the idle expiry. The tests occupy the single queue slot with a blocked call.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeAlias

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from polyspec.v1 import common_pb2, model_pb2, model_pb2_grpc

from core.errors import ErrorReason
from core.serving.server import GrpcServerSettings
from core.serving.status import error_reason
from core.serving.tls import ClientTLS, ServerTLS, open_channel
from services.model import cli
from services.model.server import SERVICE_NAME, ModelServer, start_model_server
from services.model.settings import ModelServiceSettings
from tests.support.certs import Pki, make_test_pki

Stub: TypeAlias = "model_pb2_grpc.ModelServiceAsyncStub"  # type-check-only class
CONTEXT = [3 + (5 * i) % 200 for i in range(12)]
PROMPT_SECONDS = 2.0  # what "at once" means here: far below a blocked worker's 30 s


@contextlib.asynccontextmanager
async def saturated_server(model_dir: Path, **fields: Any) -> AsyncIterator[tuple[ModelServer, Stub]]:
    """A server whose one queue slot is taken by a call that blocks until the block ends."""
    settings = ModelServiceSettings(
        model_dir=model_dir,
        max_queue=1,
        grpc=GrpcServerSettings(port=0, shutdown_grace_seconds=0.0),
        **fields,
    )
    server = await start_model_server(settings)
    release = threading.Event()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = model_pb2_grpc.ModelServiceStub(channel)
            for name in ("a", "b"):  # two cached sequences, made before the queue fills
                context = model_pb2.TokenContext(sequence_id=name, tokens=CONTEXT)
                await stub.Score(model_pb2.ScoreRequest(context=context))
            started = threading.Event()

            def block() -> None:
                started.set()
                release.wait(30)

            blocked = asyncio.ensure_future(server.worker.run(block))
            await asyncio.to_thread(started.wait, 10)
            try:
                yield server, stub
            finally:
                release.set()
                await blocked
    finally:
        await server.stop(grace=0)


@pytest.fixture
async def saturated(llama_dir: Path) -> AsyncIterator[tuple[ModelServer, Stub]]:
    async with saturated_server(llama_dir) as running:
        yield running


async def test_a_saturated_queue_refuses_forwards(
    saturated: tuple[ModelServer, Stub],
) -> None:
    _, stub = saturated
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Draft(
            model_pb2.DraftRequest(
                context=model_pb2.TokenContext(sequence_id="c", tokens=CONTEXT), max_draft_tokens=2
            ),
            timeout=PROMPT_SECONDS,
        )
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_release_is_served_at_once_and_frees_the_caches(
    saturated: tuple[ModelServer, Stub],
) -> None:
    server, stub = saturated
    assert server.engine.cache.session_count == 2
    started = time.monotonic()
    released = await stub.Release(
        model_pb2.ReleaseRequest(sequence_ids=["a", "b", "unknown"]), timeout=PROMPT_SECONDS
    )
    assert released.released == 2
    assert time.monotonic() - started < PROMPT_SECONDS
    assert server.engine.cache.session_count == 0
    assert server.engine.cache.total_bytes == 0


async def test_info_masks_and_health_do_not_wait_behind_forwards(
    saturated: tuple[ModelServer, Stub],
) -> None:
    server, stub = saturated
    info = await stub.Info(model_pb2.InfoRequest(), timeout=PROMPT_SECONDS)
    assert info.vocab_size > 0
    mask = await stub.SetTokenMask(
        model_pb2.SetTokenMaskRequest(mask_id="m", allowed_bitmap=b"\xff\x0f"), timeout=PROMPT_SECONDS
    )
    assert mask.allowed_tokens == 12
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=PROMPT_SECONDS
        )
    assert health.status == health_pb2.HealthCheckResponse.SERVING


async def test_the_idle_sweep_runs_while_the_queue_is_full(llama_dir: Path) -> None:
    """Idle caches expire on time under overload (the sweep used to queue behind forwards, and be refused)."""
    async with saturated_server(llama_dir, cache_ttl_seconds=0.3) as (server, _):
        deadline = time.monotonic() + 5
        while server.engine.cache.session_count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert server.engine.cache.session_count == 0


async def test_undecodable_requests_and_duplicate_draft_ids_are_invalid_argument(llama_dir: Path) -> None:
    settings = ModelServiceSettings(
        model_dir=llama_dir, grpc=GrpcServerSettings(port=0, shutdown_grace_seconds=0.0)
    )
    server = await start_model_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            raw = channel.unary_unary(
                "/polyspec.v1.ModelService/Score",
                request_serializer=lambda data: data,
                response_deserializer=lambda data: data,
            )
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await raw(b"\x0a\xff\xff\xff\xff", timeout=5)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "polyspec.v1.ScoreRequest" in (info.value.details() or "")
            assert error_reason(info.value) is ErrorReason.INVALID_ARGUMENT
            stub = model_pb2_grpc.ModelServiceStub(channel)
            duplicate = model_pb2.ScoreRequest(
                context=model_pb2.TokenContext(sequence_id="d", tokens=CONTEXT),
                candidate_tokens=[7],
                draft_probs=[common_pb2.SparseDistribution(token_ids=[7, 9, 7], probs=[0.25, 0.5, 0.25])],
            )
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Score(duplicate, timeout=5)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert (info.value.details() or "").startswith("draft_probs[0].token_ids[2]: repeats token id 7")
    finally:
        await server.stop(grace=0)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


async def test_the_model_service_serves_mutual_tls(llama_dir: Path, pki: Pki) -> None:
    tls = ServerTLS(cert_file=pki.server_crt, key_file=pki.server_key, client_ca_file=pki.ca_crt)
    grpc_settings = GrpcServerSettings(port=0, shutdown_grace_seconds=0.0, tls=tls, health_port=0)
    server = await start_model_server(ModelServiceSettings(model_dir=llama_dir, grpc=grpc_settings))
    address = f"127.0.0.1:{server.port}"
    try:
        client = ClientTLS(ca_file=pki.ca_crt, cert_file=pki.client_crt, key_file=pki.client_key)
        async with open_channel(address, tls=client) as channel:
            info = await model_pb2_grpc.ModelServiceStub(channel).Info(model_pb2.InfoRequest(), timeout=5)
            assert info.vocab_size > 0
        async with open_channel(address, tls=ClientTLS(ca_file=pki.ca_crt)) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await model_pb2_grpc.ModelServiceStub(channel).Info(model_pb2.InfoRequest(), timeout=5)
            assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.running.health_port}") as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(grace=0)


async def test_unreadable_certificates_fail_before_the_model_loads(tmp_path: Path) -> None:
    from core.serving.tls import TLSFileError

    tls = ServerTLS(cert_file=tmp_path / "absent.crt", key_file=tmp_path / "absent.key")
    settings = ModelServiceSettings(
        model_dir=tmp_path / "no-model-here", grpc=GrpcServerSettings(port=0, tls=tls)
    )
    with pytest.raises(TLSFileError, match="absent"):
        await start_model_server(settings)


def _parse(argv: list[str]) -> ModelServiceSettings:
    import argparse

    parser = argparse.ArgumentParser(prog="polyspec serve")
    cli.register_serve(parser.add_subparsers(dest="role", required=True))
    return ModelServiceSettings.model_validate(cli._settings_fields(parser.parse_args(argv)))


def test_transport_flags_map_onto_the_grpc_settings(tmp_path: Path) -> None:
    settings = _parse(
        [
            "model",
            "--model",
            str(tmp_path),
            "--tls-cert",
            "/tls/tls.crt",
            "--tls-key",
            "/tls/tls.key",
            "--tls-client-ca",
            "/tls/ca.crt",
            "--health-port",
            "8081",
            "--max-message-bytes",
            "16777216",
            "--max-connection-age",
            "0",
            "--max-connection-age-grace",
            "90",
        ]
    )
    assert settings.grpc.tls == ServerTLS(
        cert_file=Path("/tls/tls.crt"), key_file=Path("/tls/tls.key"), client_ca_file=Path("/tls/ca.crt")
    )
    assert settings.grpc.health_port == 8081
    assert settings.grpc.max_message_bytes == 16 * 1024 * 1024
    assert (settings.grpc.max_connection_age_ms, settings.grpc.max_connection_age_grace_ms) == (0, 90_000)
    plain = _parse(["model", "--model", str(tmp_path)])
    assert (plain.grpc.tls, plain.grpc.health_port, plain.grpc.max_connection_age_grace_ms) == (
        None,
        None,
        None,
    )


def test_half_given_tls_flags_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="polyspec serve")
    cli.register_serve(parser.add_subparsers(dest="role", required=True))
    args = parser.parse_args(["model", "--model", str(tmp_path), "--tls-key", "/k"])
    assert args.handler(args) == 2
    assert "--tls-cert and --tls-key go together" in capsys.readouterr().err
