"""The chart's transport security: TLS / mutual TLS from Secrets, the bearer token, transport limits.

Off by default (plaintext, for meshes that provide mutual TLS); ``ci/tls-values.yaml`` turns everything
on. The rendered args must parse into the services' settings with the mounted files' paths.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from coordinator.cli import settings_from_args
from core.serving.tls import ClientTLS, ServerTLS
from services.model import cli as model_cli
from services.model.settings import ModelServiceSettings
from tests.unit.deploy.chart import (
    CHART,
    NAMESPACE,
    RELEASE,
    Helm,
    Rendered,
    arg_value,
    main_container,
    pod_template,
)
from tools.main import build_parser

TLS_VALUES = CHART / "ci" / "tls-values.yaml"
TLS = Path("/etc/polyspec/tls")
CLIENT_TLS = Path("/etc/polyspec/tls-client")
ENV_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
TARGET_HOST = f"{RELEASE}-polyspec-target.{NAMESPACE}.svc.cluster.local"


@pytest.fixture(scope="module")
def secured(helm: Helm) -> Rendered:
    return helm.render([TLS_VALUES])


@pytest.fixture(scope="module")
def plain(helm: Helm) -> Rendered:
    return helm.render()


def _resolved_args(container: dict[str, Any], config: dict[str, str]) -> list[str]:
    """The container's args with $(VAR) replaced from the ConfigMap, as the process sees them."""
    env = {
        e["name"]: config[e["valueFrom"]["configMapKeyRef"]["key"]]
        for e in container["env"]
        if "valueFrom" in e
    }
    return [ENV_REFERENCE.sub(lambda match: env[match.group(1)], arg) for arg in container["args"]]


def _volumes(workload: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod_template(workload)["spec"]["volumes"]}


def _mounts(container: dict[str, Any]) -> dict[str, str]:
    return {m["name"]: m["mountPath"] for m in container["volumeMounts"]}


def test_plaintext_is_the_default_and_says_so(plain: Rendered) -> None:
    values = (CHART / "values.yaml").read_text()
    assert "OFF BY DEFAULT" in values and "service mesh" in values
    for workload in plain.workloads():
        container = main_container(workload)
        assert not [
            a for a in container["args"] if a.startswith(("--tls", "--model-tls", "--auth", "--health"))
        ]
        assert "health" not in {p["name"] for p in container["ports"]}
        assert not {"tls", "tls-client", "auth-token"} & set(_volumes(workload))


def test_every_model_service_serves_mutual_tls_from_the_secret(secured: Rendered) -> None:
    config = secured.config()
    for kind, component in (("Deployment", "drafter"), ("StatefulSet", "target")):
        workload = secured.one(kind, component)
        container = main_container(workload)
        args = build_parser().parse_args(_resolved_args(container, config))
        settings = ModelServiceSettings.model_validate(model_cli._settings_fields(args))
        assert settings.grpc.tls == ServerTLS(
            cert_file=TLS / "tls.crt", key_file=TLS / "tls.key", client_ca_file=TLS / "ca.crt"
        )
        assert settings.grpc.health_port == 8081
        assert settings.grpc.max_message_bytes == 16 * 1024 * 1024
        assert _volumes(workload)["tls"]["secret"]["secretName"] == "polyspec-tls"
        assert _mounts(container)["tls"] == str(TLS)
        assert "tls-client" not in _volumes(workload) and "auth-token" not in _volumes(workload)
    target = main_container(secured.one("StatefulSet", "target"))
    assert arg_value(target, "--max-connection-age") == "$(TARGET_MAX_CONNECTION_AGE_SECONDS)"


def test_the_coordinator_serves_tls_checks_the_token_and_talks_mtls_to_the_models(secured: Rendered) -> None:
    workload = secured.one("Deployment", "coordinator")
    container = main_container(workload)
    settings = settings_from_args(build_parser().parse_args(_resolved_args(container, secured.config())))
    assert settings.grpc.tls == ServerTLS(
        cert_file=TLS / "tls.crt", key_file=TLS / "tls.key", client_ca_file=TLS / "ca.crt"
    )
    assert settings.model_tls == ClientTLS(
        ca_file=TLS / "ca.crt",
        cert_file=CLIENT_TLS / "tls.crt",
        key_file=CLIENT_TLS / "tls.key",
        server_name=TARGET_HOST,  # target replicas are reached by pod IP
    )
    assert settings.auth_token_file == Path("/etc/polyspec/auth/token")
    assert (settings.grpc.max_message_bytes, settings.max_message_bytes) == (
        8 * 1024 * 1024,
        16 * 1024 * 1024,
    )
    assert (settings.grpc.max_connection_age_ms, settings.grpc.max_connection_age_grace_ms) == (
        900_000,
        7_200_000,
    )
    volumes = _volumes(workload)
    assert volumes["tls"]["secret"]["secretName"] == "polyspec-tls"
    assert volumes["tls-client"]["secret"]["secretName"] == "polyspec-client-tls"
    assert volumes["auth-token"]["secret"] == {
        "secretName": "polyspec-token",
        "defaultMode": 0o440,
        "items": [{"key": "bearer", "path": "token"}],
    }
    assert _mounts(container) == {
        "tmp": "/tmp",
        "tls": str(TLS),
        "tls-client": str(CLIENT_TLS),
        "auth-token": "/etc/polyspec/auth",
    }


def test_probes_use_the_plaintext_health_port_only_with_tls(secured: Rendered, plain: Rendered) -> None:
    for manifests, port_name in ((secured, "health"), (plain, "grpc")):
        for workload in manifests.workloads():
            container = main_container(workload)
            ports = {p["name"]: p["containerPort"] for p in container["ports"]}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                assert container[probe]["grpc"]["port"] == ports[port_name]


def test_the_test_pod_reads_only_the_ca_and_its_client_certificate(secured: Rendered) -> None:
    pod = secured.one("Pod", "test")
    [container] = pod["spec"]["containers"]
    script = container["args"][0]
    compile(script, "helm-test", "exec")
    assert "Client(address, credentials=credentials, bearer_token=token" in script
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]  # never the server key
    assert volumes["tls-client"]["secret"]["secretName"] == "polyspec-client-tls"
    assert volumes["auth-token"]["secret"]["secretName"] == "polyspec-token"


def test_one_secret_serves_both_ends_when_no_client_secret_is_named(helm: Helm) -> None:
    manifests = helm.render(
        sets=["tls.enabled=true", "tls.secretName=shared", "tls.serverName=models.internal"]
    )
    coordinator = manifests.one("Deployment", "coordinator")
    assert _volumes(coordinator)["tls-client"]["secret"]["secretName"] == "shared"
    assert arg_value(main_container(coordinator), "--model-tls-server-name") == "models.internal"
    assert arg_value(main_container(coordinator), "--tls-client-ca") is None  # mutual.coordinator is off
    assert "tls-client" not in {v["name"] for v in manifests.one("Pod", "test")["spec"]["volumes"]}


def test_plaintext_model_services_with_mutual_tls_off(helm: Helm) -> None:
    manifests = helm.render(sets=["tls.enabled=true", "tls.secretName=s", "tls.mutual.models=false"])
    target = main_container(manifests.one("StatefulSet", "target"))
    assert arg_value(target, "--tls-client-ca") is None
    coordinator = manifests.one("Deployment", "coordinator")
    assert arg_value(main_container(coordinator), "--model-tls-cert") is None
    assert "tls-client" not in _volumes(coordinator)


@pytest.mark.parametrize(
    ("assignments", "message"),
    [
        (["tls.enabled=true"], "/tls/secretName"),
        (["auth.enabled=true"], "/auth/secretName"),
        (["tls.healthPort=0"], "/tls/healthPort"),
        (["coordinator.settings.maxMessageBytes=1000"], "/coordinator/settings/maxMessageBytes"),
        (["target.settings.maxConnectionAgeSeconds=-1"], "/target/settings/maxConnectionAgeSeconds"),
    ],
)
def test_the_schema_refuses_incomplete_security_values(
    helm: Helm, assignments: list[str], message: str
) -> None:
    result = helm.template(sets=assignments)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
