"""The Helm chart, rendered offline by a real helm: lint, Kubernetes schemas, and what the objects say.

Every values file under ``deploy/helm/polyspec/ci`` is linted (``--strict``) and rendered; every object
is validated against the Kubernetes API schemas (strict: unknown fields are errors) of the oldest
supported and the newest known Kubernetes; the assertions then check probes, selectors, GPUs, the
headless target Service, RBAC scope, NetworkPolicies, security contexts and the toggles.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from coordinator.cli import settings_from_args
from coordinator.config import CoordinatorSettings
from coordinator.discovery import DnsReplicas, EndpointSliceReplicas, StaticReplicas, source_from_spec
from coordinator.request import SchedulerName
from services.lookup import cli as lookup_cli
from services.lookup.settings import LookupServiceSettings
from services.model import cli as model_cli
from services.model.settings import ModelServiceSettings
from tests.unit.deploy.chart import (
    CHART,
    CI_VALUES,
    E2E_DIR,
    NAMESPACE,
    RELEASE,
    SERVICE_MONITOR_API,
    Helm,
    Rendered,
    all_containers,
    arg_value,
    component_of,
    main_container,
    pod_template,
)
from tools.main import build_parser

KUBERNETES_VERSIONS = ("1.27.0", "1.37.0")
MODEL_HEALTH = "polyspec.v1.ModelService"
COORDINATOR_HEALTH = "polyspec.v1.CoordinatorService"
CI = {path.stem.removesuffix("-values"): path for path in CI_VALUES}
CI["e2e-kind"] = E2E_DIR / "kind-values.yaml"  # what deploy/e2e/kind-check.sh installs
ENV_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


@pytest.fixture(scope="module")
def rendered(helm: Helm) -> dict[str, Rendered]:
    """Each CI values file rendered once, on a cluster that serves the ServiceMonitor API."""
    return {name: helm.render([path], api_versions=[SERVICE_MONITOR_API]) for name, path in CI.items()}


def test_ci_values_cover_the_main_setups() -> None:
    assert {"default", "gpu", "no-networkpolicy", "static-target-only"} <= set(CI)


@pytest.mark.parametrize("name", sorted(CI))
def test_lint_strict_passes(helm: Helm, name: str) -> None:
    result = helm.run("lint", "--strict", str(CHART), "--values", str(CI[name]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.slow  # loads the API schemas of each Kubernetes version
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_against_the_kubernetes_schemas(
    rendered: dict[str, Rendered], version: str
) -> None:
    checked = 0
    for name, manifests in rendered.items():
        for obj in manifests.objects:
            if obj["apiVersion"].startswith("monitoring.coreos.com/"):
                continue  # a CRD: no bundled schema; checked in test_service_monitor_*
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as err:
                pytest.fail(f"{name}: {obj['kind']}/{obj['metadata']['name']}: {err}")
            checked += 1
    assert checked >= 50


def test_default_renders_the_expected_objects(rendered: dict[str, Rendered]) -> None:
    kinds = sorted((o["kind"], component_of(o) or "") for o in rendered["default"].objects)
    assert kinds == sorted(
        [
            ("ConfigMap", ""),
            ("Deployment", "drafter"),
            ("StatefulSet", "target"),
            ("Deployment", "coordinator"),
            ("Service", "drafter"),
            ("Service", "target"),
            ("Service", "coordinator"),
            ("ServiceAccount", "coordinator"),
            ("ServiceAccount", ""),
            ("Role", "coordinator"),
            ("RoleBinding", "coordinator"),
            ("NetworkPolicy", "drafter"),
            ("NetworkPolicy", "target"),
            ("NetworkPolicy", "coordinator"),
            ("PodDisruptionBudget", "drafter"),
            ("PodDisruptionBudget", "target"),
            ("PodDisruptionBudget", "coordinator"),
            ("Pod", "test"),
        ]
    )
    for obj in rendered["default"].objects:
        assert obj["metadata"]["namespace"] == NAMESPACE


@pytest.mark.parametrize("name", sorted(CI))
def test_probes_are_grpc_health_checks_on_the_grpc_port(rendered: dict[str, Rendered], name: str) -> None:
    """On the gRPC port; with TLS on the plaintext health port (kubelet's gRPC probes cannot speak TLS)."""
    for workload in rendered[name].workloads():
        container = main_container(workload)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        grpc_port = ports.get("health", ports["grpc"])
        health = COORDINATOR_HEALTH if component_of(workload) == "coordinator" else MODEL_HEALTH
        expected = {"startupProbe": health, "readinessProbe": health, "livenessProbe": ""}
        for probe_name, service in expected.items():
            probe = container[probe_name]
            assert set(probe) - {"periodSeconds", "timeoutSeconds", "failureThreshold"} == {"grpc"}
            assert probe["grpc"] == {"port": grpc_port, "service": service}


@pytest.mark.parametrize("name", sorted(CI))
def test_selectors_match_their_pods_and_are_release_aware(rendered: dict[str, Rendered], name: str) -> None:
    manifests = rendered[name]
    pods = {component_of(w): pod_template(w)["metadata"]["labels"] for w in manifests.workloads()}
    for workload in manifests.workloads():
        selector = workload["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_template(workload)["metadata"]["labels"].items()
        assert selector["app.kubernetes.io/instance"] == RELEASE
        assert selector["app.kubernetes.io/component"] == component_of(workload)
        assert "helm.sh/chart" not in selector and "app.kubernetes.io/version" not in selector
    for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
        for obj in manifests.kind(kind):
            spec = obj["spec"]
            selector = spec.get("selector") or spec["podSelector"]
            selector = selector.get("matchLabels", selector)
            matched = [c for c, labels in pods.items() if selector.items() <= labels.items()]
            assert matched == [component_of(obj)], f"{kind}/{obj['metadata']['name']} selects {matched}"


def test_two_releases_select_disjoint_pods(helm: Helm) -> None:
    first = helm.render(release="alpha")
    second = helm.render(release="beta")
    for a, b in zip(first.workloads(), second.workloads(), strict=True):
        assert a["metadata"]["name"] != b["metadata"]["name"]
        assert a["spec"]["selector"]["matchLabels"] != b["spec"]["selector"]["matchLabels"]


def test_target_replicas_sit_behind_a_headless_service(rendered: dict[str, Rendered]) -> None:
    manifests = rendered["default"]
    service = manifests.one("Service", "target")
    statefulset = manifests.one("StatefulSet", "target")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is False
    assert statefulset["spec"]["serviceName"] == service["metadata"]["name"]
    assert {p["name"] for p in service["spec"]["ports"]} == {"grpc", "metrics"}
    assert manifests.one("Service", "coordinator")["spec"].get("clusterIP") != "None"


def test_target_replica_count_is_the_dsi_degree(helm: Helm) -> None:
    manifests = helm.render(sets=["target.replicaCount=3"])
    assert manifests.one("StatefulSet", "target")["spec"]["replicas"] == 3


def test_gpu_values_ask_for_gpus_and_the_cuda_image(rendered: dict[str, Rendered]) -> None:
    manifests = rendered["gpu"]
    for component in ("drafter", "target"):
        workload = next(w for w in manifests.workloads() if component_of(w) == component)
        container = main_container(workload)
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert container["image"] == "polyspec:0.1.0-cuda"
        assert arg_value(container, "--device") == f"$({component.upper()}_DEVICE)"
        assert manifests.config()[f"{component.upper()}_DEVICE"] == "cuda"
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod_template(
            workload
        )["spec"]["tolerations"]
    target = manifests.one("StatefulSet", "target")
    assert pod_template(target)["spec"]["runtimeClassName"] == "nvidia"
    assert pod_template(target)["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    coordinator = main_container(manifests.one("Deployment", "coordinator"))
    assert "nvidia.com/gpu" not in coordinator["resources"].get("limits", {})
    assert coordinator["image"] == "polyspec:0.1.0"


def test_cpu_values_ask_for_no_gpu(rendered: dict[str, Rendered]) -> None:
    for _, spec in rendered["default"].pod_specs():
        for container in all_containers(spec):
            assert "nvidia.com/gpu" not in container.get("resources", {}).get("limits", {})
            assert not container["image"].endswith("-cuda")


def test_image_tag_defaults_to_the_app_version(rendered: dict[str, Rendered]) -> None:
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    images = {c["image"] for _, s in rendered["default"].pod_specs() for c in all_containers(s)}
    assert images == {f"polyspec:{app_version}"}
    pinned = {c["image"] for _, s in rendered["static-target-only"].pod_specs() for c in all_containers(s)}
    assert len(pinned) == 1 and re.fullmatch(
        r"registry\.example\.com/ml/polyspec@sha256:[0-9a-f]{64}", *pinned
    )


def test_rbac_reads_endpointslices_in_the_release_namespace_only(rendered: dict[str, Rendered]) -> None:
    manifests = rendered["default"]
    assert not manifests.kind("ClusterRole") and not manifests.kind("ClusterRoleBinding")
    role = manifests.one("Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {
            "apiGroups": ["discovery.k8s.io"],
            "resources": ["endpointslices"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    binding = manifests.one("RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    coordinator = pod_template(manifests.one("Deployment", "coordinator"))["spec"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": coordinator["serviceAccountName"], "namespace": NAMESPACE}
    ]
    assert coordinator["automountServiceAccountToken"] is True
    for component in ("drafter", "target"):
        workload = next(w for w in manifests.workloads() if component_of(w) == component)
        spec = pod_template(workload)["spec"]
        assert spec["automountServiceAccountToken"] is False
        assert spec["serviceAccountName"] != coordinator["serviceAccountName"]


def test_no_rbac_and_no_token_without_endpointslice_discovery(rendered: dict[str, Rendered]) -> None:
    manifests = rendered["no-networkpolicy"]
    assert not manifests.kind("Role") and not manifests.kind("RoleBinding")
    assert not manifests.kind("ServiceAccount")
    coordinator = pod_template(manifests.one("Deployment", "coordinator"))["spec"]
    assert coordinator["automountServiceAccountToken"] is False
    assert coordinator["serviceAccountName"] == "default"


def _grpc_peers(policy: dict[str, Any]) -> list[Any]:
    return [rule.get("from") for rule in policy["spec"]["ingress"] if rule["ports"][0]["port"] == "grpc"]


def test_only_the_coordinator_reaches_the_model_services(rendered: dict[str, Rendered]) -> None:
    manifests = rendered["default"]
    coordinator_labels = pod_template(manifests.one("Deployment", "coordinator"))["metadata"]["labels"]
    for component in ("drafter", "target"):
        policy = manifests.one("NetworkPolicy", component)
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        [peers] = _grpc_peers(policy)
        assert len(peers) == 1 and set(peers[0]) == {"podSelector"}
        selector = peers[0]["podSelector"]["matchLabels"]
        assert selector["app.kubernetes.io/component"] == "coordinator"
        assert selector.items() <= coordinator_labels.items()
        metrics = [r for r in policy["spec"]["ingress"] if r["ports"][0]["port"] == "metrics"]
        assert metrics == [
            {
                "from": [
                    {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
                ],
                "ports": [{"port": "metrics", "protocol": "TCP"}],
            }
        ]
    assert _grpc_peers(manifests.one("NetworkPolicy", "coordinator")) == [None]  # open to clients


def test_restricted_coordinator_clients_still_admit_the_test_pod(rendered: dict[str, Rendered]) -> None:
    manifests = rendered["static-target-only"]
    [peers] = _grpc_peers(manifests.one("NetworkPolicy", "coordinator"))
    assert peers[0] == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "apps"}}}
    test_labels = manifests.one("Pod", "test")["metadata"]["labels"]
    assert peers[1]["podSelector"]["matchLabels"].items() <= test_labels.items()
    assert manifests.maybe("NetworkPolicy", "drafter") is None


def test_network_policy_toggle(rendered: dict[str, Rendered]) -> None:
    assert not rendered["no-networkpolicy"].kind("NetworkPolicy")
    assert not rendered["no-networkpolicy"].kind("PodDisruptionBudget")
    assert not rendered["no-networkpolicy"].kind("Pod")


@pytest.mark.parametrize("name", sorted(CI))
def test_pods_are_hardened(rendered: dict[str, Rendered], name: str) -> None:
    for pod_name, spec in rendered[name].pod_specs():
        assert spec["securityContext"]["runAsNonRoot"] is True, pod_name
        assert spec["securityContext"]["runAsUser"] > 0
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert "emptyDir" in volumes["tmp"]
        for container in all_containers(spec):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["privileged"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            assert mounts["/tmp"]["name"] == "tmp"


def test_models_are_fetched_into_a_volume_and_mounted_read_only(rendered: dict[str, Rendered]) -> None:
    manifests = rendered["default"]
    config = manifests.config()
    for component in ("drafter", "target"):
        workload = next(w for w in manifests.workloads() if component_of(w) == component)
        spec = pod_template(workload)["spec"]
        [fetch] = spec["initContainers"]
        assert fetch["args"][1:] == ["models", "fetch", "--no-progress", f"$({component.upper()}_MODEL)"]
        assert {m["name"]: m.get("readOnly", False) for m in fetch["volumeMounts"]} == {
            "models": False,
            "tmp": False,
        }
        server = main_container(workload)
        assert {m["name"]: m.get("readOnly", False) for m in server["volumeMounts"]} == {
            "models": True,
            "tmp": False,
        }
        model = config[f"{component.upper()}_MODEL"]
        assert config[f"{component.upper()}_MODEL_DIR"] == f"/cache/models/{model}"
        assert {"emptyDir": {"sizeLimit": "20Gi"}, "name": "models"} in spec["volumes"]
    claim = rendered["gpu"].one("StatefulSet", "target")
    volumes = pod_template(claim)["spec"]["volumes"]
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "polyspec-models"}} in volumes
    ephemeral = rendered["static-target-only"].one("StatefulSet", "target")
    [models] = [v for v in pod_template(ephemeral)["spec"]["volumes"] if v["name"] == "models"]
    claim_spec = models["ephemeral"]["volumeClaimTemplate"]["spec"]
    assert claim_spec["storageClassName"] == "fast-ssd"
    assert claim_spec["resources"]["requests"]["storage"] == "30Gi"


def test_a_model_path_skips_the_fetch(helm: Helm) -> None:
    manifests = helm.render(sets=["target.modelPath=shared/qwen-1.5b", "models.fetch.enabled=true"])
    target = manifests.one("StatefulSet", "target")
    assert "initContainers" not in pod_template(target)["spec"]
    assert manifests.config()["TARGET_MODEL_DIR"] == "/cache/shared/qwen-1.5b"
    assert "TARGET_MODEL" not in manifests.config()
    drafter = manifests.one("Deployment", "drafter")
    assert len(pod_template(drafter)["spec"]["initContainers"]) == 1


def _env_names(container: dict[str, Any]) -> set[str]:
    return {entry["name"] for entry in container.get("env", [])}


@pytest.mark.parametrize("name", sorted(CI))
def test_settings_come_from_the_config_map(rendered: dict[str, Rendered], name: str) -> None:
    manifests = rendered[name]
    config = manifests.one("ConfigMap")
    for pod_name, spec in manifests.pod_specs():
        for container in all_containers(spec):
            for reference in ENV_REFERENCE.findall(" ".join(container.get("args", []))):
                assert reference in _env_names(container), f"{pod_name}: $({reference}) is not set"
            for entry in container.get("env", []):
                ref = entry.get("valueFrom", {}).get("configMapKeyRef")
                if ref:
                    assert ref["name"] == config["metadata"]["name"]
                    assert ref["key"] in config["data"]


def test_pods_roll_when_their_settings_change(helm: Helm, rendered: dict[str, Rendered]) -> None:
    def checksums(manifests: Rendered) -> dict[str | None, str]:
        return {
            component_of(w): pod_template(w)["metadata"]["annotations"]["checksum/config"]
            for w in manifests.workloads()
        }

    before = checksums(rendered["default"])
    after = checksums(helm.render(sets=["coordinator.settings.lookaheadK=7"]))
    assert after["coordinator"] != before["coordinator"]
    assert (after["drafter"], after["target"]) == (before["drafter"], before["target"])


def _cli_args(container: dict[str, Any], config: dict[str, str]) -> list[str]:
    """The container's args as the process would see them: $(VAR) replaced from the ConfigMap."""
    env = {
        e["name"]: config[e["valueFrom"]["configMapKeyRef"]["key"]]
        for e in container["env"]
        if "valueFrom" in e
    }
    env.update({e["name"]: e["value"] for e in container["env"] if "value" in e})
    return [ENV_REFERENCE.sub(lambda m: env[m.group(1)], arg) for arg in container["args"]]


@pytest.mark.parametrize("name", sorted(CI))
def test_container_args_parse_with_the_real_cli(rendered: dict[str, Rendered], name: str) -> None:
    manifests = rendered[name]
    config = manifests.config()
    for workload in manifests.workloads():
        for container in all_containers(pod_template(workload)["spec"]):
            args = build_parser().parse_args(_cli_args(container, config))
            assert callable(args.handler)
    gpu = rendered["gpu"]
    target_args = build_parser().parse_args(
        _cli_args(main_container(gpu.one("StatefulSet", "target")), gpu.config())
    )
    assert (target_args.device, target_args.dtype, target_args.cache_budget_mib) == (
        "cuda",
        "bfloat16",
        16384,
    )
    coordinator = main_container(gpu.one("Deployment", "coordinator"))
    coordinator_args = build_parser().parse_args(_cli_args(coordinator, gpu.config()))
    assert (coordinator_args.lookahead_k, coordinator_args.max_new_tokens_cap) == (6, 1_000_000)
    assert coordinator_args.startup_timeout == 1800


@pytest.mark.parametrize("name", sorted(CI))
def test_model_service_args_make_valid_settings(rendered: dict[str, Rendered], name: str) -> None:
    manifests = rendered[name]
    for workload in manifests.workloads():
        if component_of(workload) == "coordinator":
            continue
        args = build_parser().parse_args(_cli_args(main_container(workload), manifests.config()))
        if args.role == "drafter":  # a model-free lookup drafter (test_a_lookup_drafter_...)
            continue
        settings = ModelServiceSettings.model_validate(model_cli._settings_fields(args))
        assert (
            settings.grpc.host == "0.0.0.0"
            and settings.metrics_port == main_container(workload)["ports"][1]["containerPort"]
        )
        assert str(settings.model_dir).startswith("/cache/")
        expected_kernel = "onednn-packed" if name == "static-target-only" else "onednn"
        assert settings.linear_kernel == expected_kernel
        # the drafter's default: int8 on the cpu (docs/benchmarks/notes.md); the target as the user chose
        on_cpu_drafter = component_of(workload) == "drafter" and name != "gpu"
        assert settings.quantize == ("int8-weight-only" if on_cpu_drafter else "none")
        if component_of(workload) == "drafter":
            assert settings.dtype == "bfloat16"


def test_the_scheduler_value_becomes_the_coordinators_default(helm: Helm) -> None:
    manifests = helm.render(sets=["coordinator.settings.scheduler=dsi", "target.replicaCount=3"])
    container = main_container(manifests.one("Deployment", "coordinator"))
    settings = settings_from_args(build_parser().parse_args(_cli_args(container, manifests.config())))
    assert settings.default_scheduler is SchedulerName.DSI
    default = helm.render()
    container = main_container(default.one("Deployment", "coordinator"))
    settings = settings_from_args(build_parser().parse_args(_cli_args(container, default.config())))
    assert settings.default_scheduler is SchedulerName.SI and "--scheduler" not in container["args"]


def _coordinator_settings(manifests: Rendered) -> CoordinatorSettings:
    container = main_container(manifests.one("Deployment", "coordinator"))
    return settings_from_args(build_parser().parse_args(_cli_args(container, manifests.config())))


def test_the_coordinator_loads_the_disco_artifact_of_its_pair_by_default(
    helm: Helm, rendered: dict[str, Rendered]
) -> None:
    """discoArtifact (default auto) and discoArtifactDir (default empty: the artifacts in the image)."""
    default = rendered["default"]
    assert (
        "--disco-artifact=$(COORDINATOR_DISCO_ARTIFACT)"
        in main_container(default.one("Deployment", "coordinator"))["args"]
    )
    settings = _coordinator_settings(default)
    assert (settings.disco_artifact, settings.disco_artifact_dir) == ("auto", None)
    assert "COORDINATOR_DISCO_ARTIFACT_DIR" not in default.config()
    searched = _coordinator_settings(helm.render(sets=["coordinator.settings.discoArtifactDir=/opt/disco"]))
    assert (searched.disco_artifact, searched.disco_artifact_dir) == ("auto", Path("/opt/disco"))
    folder = _coordinator_settings(helm.render(sets=["coordinator.settings.discoArtifact=/opt/disco/qwen"]))
    assert (folder.disco_artifact, folder.disco_artifact_dir) == (Path("/opt/disco/qwen"), None)
    off = helm.render(sets=["coordinator.settings.discoArtifact=null"])
    assert (
        _coordinator_settings(off).disco_artifact is None and "COORDINATOR_DISCO_ARTIFACT" not in off.config()
    )
    target_only = rendered["static-target-only"]  # no drafter: nothing to stop, the default is dropped
    assert _coordinator_settings(target_only).disco_artifact is None
    assert "COORDINATOR_DISCO_ARTIFACT" not in target_only.config()


def test_static_coordinator_args_make_valid_settings(rendered: dict[str, Rendered]) -> None:
    manifests = rendered["static-target-only"]
    container = main_container(manifests.one("Deployment", "coordinator"))
    settings = settings_from_args(build_parser().parse_args(_cli_args(container, manifests.config())))
    assert len(settings.target_addresses) == 2 and settings.drafter_address is None
    assert (settings.grpc.host, settings.grpc.port, settings.metrics_port) == ("0.0.0.0", 50051, 9091)


def test_coordinator_targets_parse_as_discovery_specs(rendered: dict[str, Rendered]) -> None:
    default = rendered["default"]
    headless = default.one("Service", "target")
    spec = arg_value(main_container(default.one("Deployment", "coordinator")), "--target")
    assert spec is not None
    slices = source_from_spec(spec)
    assert isinstance(slices, EndpointSliceReplicas)
    assert (slices.service, slices.namespace) == (headless["metadata"]["name"], NAMESPACE)
    assert slices.port_name in {p["name"] for p in headless["spec"]["ports"]}

    dns_spec = arg_value(
        main_container(rendered["no-networkpolicy"].one("Deployment", "coordinator")), "--target"
    )
    dns = source_from_spec(dns_spec or "")
    assert isinstance(dns, DnsReplicas)
    assert dns.host == f"{headless['metadata']['name']}.{NAMESPACE}.svc.cluster.local" and dns.port == 50052

    static_spec = arg_value(
        main_container(rendered["static-target-only"].one("Deployment", "coordinator")), "--target"
    )
    static = source_from_spec(static_spec or "")
    assert isinstance(static, StaticReplicas)
    assert static.addresses == {
        f"llm-target-{i}.llm-target.{NAMESPACE}.svc.cluster.local:50052" for i in range(2)
    }


def test_the_coordinator_uses_the_drafter_service(rendered: dict[str, Rendered]) -> None:
    default = rendered["default"]
    drafter = default.one("Service", "drafter")
    address = arg_value(main_container(default.one("Deployment", "coordinator")), "--drafter")
    assert address == f"{drafter['metadata']['name']}.{NAMESPACE}.svc.cluster.local:50052"
    target_only = rendered["static-target-only"]
    assert arg_value(main_container(target_only.one("Deployment", "coordinator")), "--drafter") is None
    assert not [o for o in target_only.objects if component_of(o) == "drafter"]
    assert "DRAFTER_MODEL" not in target_only.config()


def test_autoscaling_owns_the_replica_count(rendered: dict[str, Rendered]) -> None:
    gpu = rendered["gpu"]
    hpa = gpu.one("HorizontalPodAutoscaler", "target")
    target = gpu.one("StatefulSet", "target")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": target["metadata"]["name"],
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 6)
    assert "replicas" not in target["spec"]
    assert gpu.one("Deployment", "coordinator")["spec"]["replicas"] == 2
    assert not rendered["default"].kind("HorizontalPodAutoscaler")


def test_service_monitor_needs_the_prometheus_operator_api(helm: Helm, rendered: dict[str, Rendered]) -> None:
    monitor = rendered["gpu"].one("ServiceMonitor")
    assert monitor["apiVersion"] == SERVICE_MONITOR_API
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [
        s for s in rendered["gpu"].kind("Service") if selector.items() <= s["metadata"]["labels"].items()
    ]
    assert sorted(component_of(s) or "" for s in services) == ["coordinator", "drafter", "target"]
    for service in services:
        assert "metrics" in {p["name"] for p in service["spec"]["ports"]}
    without_api = helm.render([CI["gpu"]])
    assert not without_api.kind("ServiceMonitor")
    assert not rendered["default"].kind("ServiceMonitor")


def test_pod_disruption_budgets_cover_each_component(rendered: dict[str, Rendered]) -> None:
    budgets = rendered["default"].kind("PodDisruptionBudget")
    assert sorted(component_of(b) or "" for b in budgets) == ["coordinator", "drafter", "target"]
    assert all(b["spec"]["maxUnavailable"] == 1 for b in budgets)


def test_helm_test_pod_generates_through_the_coordinator(rendered: dict[str, Rendered]) -> None:
    manifests = rendered["default"]
    pod = manifests.one("Pod", "test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    [container] = pod["spec"]["containers"]
    script, address, prompt, count, timeout = container["args"]
    compile(script, "helm-test", "exec")
    assert '"polyspec", "generate", "--coordinator", address, "--json"' in script
    service = manifests.one("Service", "coordinator")
    assert address == f"{service['metadata']['name']}.{NAMESPACE}.svc.cluster.local:50051"
    assert (prompt, count, timeout) == ("def fibonacci(n):", "8", "600")
    args = build_parser().parse_args(
        [
            "generate",
            "--coordinator",
            address,
            "--json",
            "--max-new-tokens",
            count,
            "--timeout",
            timeout,
            prompt,
        ]
    )
    assert args.json and args.max_new_tokens == 8


def test_notes_describe_the_release(helm: Helm) -> None:
    result = helm.run("install", RELEASE, str(CHART), "--dry-run=client", "--namespace", NAMESPACE)
    assert result.returncode == 0, result.stderr
    notes = result.stdout.split("NOTES:", 1)[1]
    assert f"kubernetes:///{RELEASE}-polyspec-target.{NAMESPACE}:grpc" in notes
    assert f"helm test {RELEASE} -n {NAMESPACE} --logs" in notes
    assert "port-forward svc/spec-polyspec-coordinator 50051:50051" in notes


def test_rendering_has_no_stray_blank_lines(helm: Helm) -> None:
    for path in CI.values():
        text = helm.template([path], api_versions=[SERVICE_MONITOR_API]).stdout
        assert not [n for n, line in enumerate(text.splitlines()) if line and not line.strip()]
        assert "latest" not in text


def test_a_lookup_drafter_reads_the_targets_folder(helm: Helm, rendered: dict[str, Rendered]) -> None:
    """drafter.kind suffix: `serve drafter` on the target's model folder (fetched into the drafter's
    volume), its lookup settings from the ConfigMap; model-only settings are refused at render time."""
    manifests = rendered["lookup-drafter"]
    drafter = manifests.one("Deployment", "drafter")
    args = build_parser().parse_args(_cli_args(main_container(drafter), manifests.config()))
    settings = LookupServiceSettings.model_validate(lookup_cli.settings_fields(args))
    assert settings.kind == "suffix" and str(settings.target_model_dir) == "/cache/models/qwen2.5-coder-0.5b"
    assert (settings.suffix_depth, settings.cross_request_memory_tokens, settings.max_draft_tokens) == (
        16,
        100_000,
        12,
    )
    assert settings.grpc.host == "0.0.0.0" and settings.metrics_port == 9090
    fetch = pod_template(drafter)["spec"]["initContainers"][0]
    assert _cli_args(fetch, manifests.config())[-1] == "qwen2.5-coder-0.5b", "the target's model is fetched"
    refused = helm.template(sets=["drafter.kind=ngram", "drafter.settings.dtype=bfloat16"])
    assert refused.returncode != 0 and "drafter.settings.dtype does not apply" in refused.stderr
    unknown = helm.template(sets=["drafter.kind=bigram"])
    assert unknown.returncode != 0 and "kind" in unknown.stderr
