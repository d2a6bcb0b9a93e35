"""TLS / mutual TLS on every hop, the bearer token and the message caps, from settings and from flags."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from polyspec import AsyncClient, UnauthenticatedError, UnavailableError

from coordinator.cli import settings_from_args
from coordinator.config import CoordinatorSettings
from coordinator.server import SERVICE_NAME, CoordinatorServer, start_coordinator
from core.errors import UnavailableError as ServiceUnavailableError
from core.serving.auth import TokenError
from core.serving.server import GrpcServerSettings
from core.serving.tls import ClientTLS, ServerTLS
from tests.support.certs import SERVER_NAME, Pki, make_test_pki
from tests.support.toy_lm import word_lm
from tests.support.toy_service import ToyModel, ToyServer, start_toy_server, toy_info
from tests.unit.coordinator.conftest import TARGET_SEED
from tools.main import build_parser

TOKEN = "coordinator-token-1"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_test_pki(tmp_path_factory.mktemp("pki"))


def mutual_tls(pki: Pki) -> ServerTLS:
    return ServerTLS(cert_file=pki.server_crt, key_file=pki.server_key, client_ca_file=pki.ca_crt)


def client_tls(pki: Pki, **overrides: Any) -> ClientTLS:
    fields = {"ca_file": pki.ca_crt, "cert_file": pki.client_crt, "key_file": pki.client_key}
    return ClientTLS(**{**fields, **overrides})


def grpc_settings(**fields: Any) -> GrpcServerSettings:
    return GrpcServerSettings(port=0, shutdown_grace_seconds=0.0, **fields)


@pytest.fixture
async def tls_toys(pki: Pki, toy_tokenizer: Any) -> AsyncIterator[Callable[[], Awaitable[ToyServer]]]:
    """Toy model services that require mutual TLS."""
    started: list[ToyServer] = []

    async def start() -> ToyServer:
        lm = word_lm(TARGET_SEED)
        model = ToyModel(lm, toy_info(lm, toy_tokenizer, model_name="toy"))
        server = await start_toy_server(model, grpc_settings(tls=mutual_tls(pki)))
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


@pytest.fixture
async def coordinators() -> AsyncIterator[Callable[[CoordinatorSettings], Awaitable[CoordinatorServer]]]:
    started: list[CoordinatorServer] = []

    async def start(settings: CoordinatorSettings) -> CoordinatorServer:
        server = await start_coordinator(settings)
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop(0)


def settings_for(target: str, drafter: str | None = None, **fields: Any) -> CoordinatorSettings:
    return CoordinatorSettings(
        target_addresses=(target,),
        drafter_address=drafter,
        grpc=fields.pop("grpc", grpc_settings()),
        startup_timeout_seconds=fields.pop("startup_timeout_seconds", 10.0),
        **fields,
    )


def sdk_credentials(pki: Pki, with_certificate: bool = True) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca_crt.read_bytes(),
        private_key=pki.client_key.read_bytes() if with_certificate else None,
        certificate_chain=pki.client_crt.read_bytes() if with_certificate else None,
    )


async def test_mutual_tls_on_every_hop_and_the_bearer_token(
    pki: Pki, tmp_path: Path, tls_toys: Any, coordinators: Any
) -> None:
    """Client -> coordinator and coordinator -> drafter / target all run mutual TLS; the token is checked."""
    target, drafter = await tls_toys(), await tls_toys()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    server = await coordinators(
        settings_for(
            target.address,
            drafter.address,
            grpc=grpc_settings(tls=mutual_tls(pki)),
            model_tls=client_tls(pki, server_name=SERVER_NAME),
            auth_token_file=token_file,
        )
    )
    address = f"127.0.0.1:{server.port}"
    async with AsyncClient(
        address, credentials=sdk_credentials(pki), bearer_token=TOKEN, timeout=20
    ) as client:
        result = await client.generate(
            "alpha beta", max_new_tokens=6, temperature=0, algorithm="sd", ignore_eos=True
        )
        assert len(result.token_ids) == 6
        assert result.stats.drafter_forwards > 0
        stream = client.generate_stream("alpha", max_new_tokens=3, temperature=0, ignore_eos=True)
        assert len((await stream.collect()).token_ids) == 3
    async with AsyncClient(address, credentials=sdk_credentials(pki), max_retries=0, timeout=10) as anonymous:
        with pytest.raises(UnauthenticatedError, match="requires a bearer token"):
            await anonymous.generate("alpha", max_new_tokens=2)
    async with AsyncClient(
        address, credentials=sdk_credentials(pki), bearer_token="wrong", timeout=10
    ) as wrong:
        with pytest.raises(UnauthenticatedError, match="not valid"):
            await wrong.generate("alpha", max_new_tokens=2)
    no_certificate = sdk_credentials(pki, with_certificate=False)
    async with AsyncClient(
        address, credentials=no_certificate, bearer_token=TOKEN, max_retries=0, timeout=5
    ) as c:
        with pytest.raises(UnavailableError):
            await c.generate("alpha", max_new_tokens=2)
    # Health stays open to any TLS client with a certificate, without the token.
    channel = grpc.aio.secure_channel(address, sdk_credentials(pki))
    async with channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=5
        )
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize(
    "model_tls",
    [None, "no client certificate", "wrong server name"],
)
async def test_a_coordinator_without_the_right_credentials_cannot_reach_mtls_services(
    pki: Pki, tls_toys: Any, model_tls: str | None
) -> None:
    target = await tls_toys()
    tls = {
        None: None,
        "no client certificate": ClientTLS(ca_file=pki.ca_crt),
        "wrong server name": client_tls(pki, server_name="elsewhere.polyspec.test"),
    }[model_tls]
    with pytest.raises(ServiceUnavailableError, match="did not answer Info"):
        await start_coordinator(settings_for(target.address, model_tls=tls, startup_timeout_seconds=1.0))


async def test_a_bad_token_source_fails_before_connecting() -> None:
    unreachable = "127.0.0.1:9"  # nothing listens: connecting would take the whole startup timeout
    settings = settings_for(
        unreachable, auth_token_env="POLYSPEC_TEST_TOKEN_NOT_SET", startup_timeout_seconds=30
    )
    with pytest.raises(TokenError, match="POLYSPEC_TEST_TOKEN_NOT_SET"):
        await start_coordinator(settings)


def test_serve_flags_set_tls_token_caps_and_connection_age(tmp_path: Path) -> None:
    argv = [
        "serve",
        "coordinator",
        "--target",
        "t:1",
        "--tls-cert",
        "/tls/tls.crt",
        "--tls-key",
        "/tls/tls.key",
        "--tls-client-ca",
        "/tls/ca.crt",
        "--health-port",
        "8081",
        "--max-message-bytes",
        "8388608",
        "--model-max-message-bytes",
        "4194304",
        "--max-connection-age",
        "600",
        "--max-connection-age-grace",
        "7200",
        "--auth-token-file",
        "/token/token",
        "--model-tls-ca",
        "/model-tls/ca.crt",
        "--model-tls-cert",
        "/model-tls/tls.crt",
        "--model-tls-key",
        "/model-tls/tls.key",
        "--model-tls-server-name",
        "spec-target.inference.svc",
    ]
    settings = settings_from_args(build_parser().parse_args(argv))
    assert settings.grpc.tls == ServerTLS(
        cert_file=Path("/tls/tls.crt"), key_file=Path("/tls/tls.key"), client_ca_file=Path("/tls/ca.crt")
    )
    assert settings.grpc.health_port == 8081
    assert settings.grpc.max_message_bytes == 8 * 1024 * 1024
    assert settings.max_message_bytes == 4 * 1024 * 1024
    assert (settings.grpc.max_connection_age_ms, settings.grpc.max_connection_age_grace_ms) == (
        600_000,
        7_200_000,
    )
    assert settings.auth_token_file == Path("/token/token") and settings.auth_token_env is None
    assert settings.model_tls == ClientTLS(
        ca_file=Path("/model-tls/ca.crt"),
        cert_file=Path("/model-tls/tls.crt"),
        key_file=Path("/model-tls/tls.key"),
        server_name="spec-target.inference.svc",
    )


def test_plaintext_stays_the_flag_default_and_model_tls_can_use_system_roots() -> None:
    plain = settings_from_args(build_parser().parse_args(["serve", "coordinator", "--target", "t:1"]))
    assert (plain.grpc.tls, plain.model_tls, plain.auth_token_file, plain.auth_token_env) == (None,) * 4
    assert plain.grpc.max_connection_age_grace_ms is None  # a live generation is never cut by the age limit
    system_roots = settings_from_args(
        build_parser().parse_args(
            ["serve", "coordinator", "--target", "t:1", "--model-tls", "--auth-token-env", "T"]
        )
    )
    assert system_roots.model_tls == ClientTLS()
    assert system_roots.auth_token_env == "T"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tls-cert", "/c"], "--tls-cert and --tls-key go together"),
        (["--tls-client-ca", "/ca"], "--tls-cert and --tls-key go together"),
        (["--model-tls-cert", "/c"], "both cert_file and key_file"),
        (["--max-message-bytes", "10"], "max_message_bytes"),
    ],
)
def test_incomplete_security_flags_exit_2(
    capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    args = build_parser().parse_args(["serve", "coordinator", "--target", "t:1", *extra])
    assert args.handler(args) == 2
    assert message in capsys.readouterr().err


def test_token_file_and_variable_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(
            ["serve", "coordinator", "--target", "t:1", "--auth-token-file", "/t", "--auth-token-env", "T"]
        )
    assert "not allowed with argument" in capsys.readouterr().err
