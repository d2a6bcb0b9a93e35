"""values.schema.json and the chart's own guards reject bad values with a message naming the problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.unit.deploy.chart import CHART, Helm

# Schema nodes that describe Kubernetes objects: only partly pinned, the rest is the API's business.
KUBERNETES_OBJECTS = {"/podSecurityContext", "/securityContext", "/envList/items"}


def _open_objects(node: object, path: str) -> list[str]:
    """Paths of schema objects that declare properties yet accept unknown ones."""
    if not isinstance(node, dict):
        return []
    found = []
    declared = node.get("type") == "object" and "properties" in node
    if declared and node.get("additionalProperties") is not False and path not in KUBERNETES_OBJECTS:
        found.append(path)
    for key, value in node.items():
        found += _open_objects(value, path if key in ("properties", "definitions") else f"{path}/{key}")
    return found


def test_schema_is_strict_at_every_level() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    assert _open_objects(schema, "") == []


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("image.tag=latest", "/image/tag"),
        ("drafter.bogus=1", "additional properties 'bogus' not allowed"),
        ("coordinator.discovery=consul", "/coordinator/discovery"),
        ("models.volume.type=existingClaim", "/models/volume/existingClaim"),
        ("models.volume.type=hostPath", "/models/volume/type"),
        ("podSecurityContext.runAsNonRoot=false", "/podSecurityContext/runAsNonRoot"),
        ("securityContext.allowPrivilegeEscalation=true", "/securityContext/allowPrivilegeEscalation"),
        ("target.replicaCount=-1", "/target/replicaCount"),
        ("target.port=70000", "/target/port"),
        ("target.model=Qwen/Qwen2.5", "/target/model"),
        ("target.modelPath=../etc", "/target/modelPath"),
        ("target.gpu.count=0", "/target/gpu/count"),
        ("target.settings.dtype=float8", "/target/settings/dtype"),
        ("target.settings.linearKernel=mkl", "/target/settings/linearKernel"),
        ("drafter.settings.quantize=int4", "/drafter/settings/quantize"),
        ("coordinator.settings.confidenceThreshold=1.5", "/coordinator/settings/confidenceThreshold"),
        ("coordinator.settings.scheduler=fast", "/coordinator/settings/scheduler"),
        ("coordinator.settings.discoArtifact=disco", "/coordinator/settings/discoArtifact"),
        ("coordinator.settings.discoArtifactDir=disco", "/coordinator/settings/discoArtifactDir"),
        ("image.digests.cpu=sha256:abc", "/image/digests/cpu"),
        ("tests.maxNewTokens=0", "/tests/maxNewTokens"),
        ("logLevel=verbose", "/logLevel"),
    ],
)
def test_schema_rejects_bad_values(helm: Helm, assignment: str, message: str) -> None:
    result = helm.template(sets=[assignment])
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("assignments", "message"),
    [
        (
            ["coordinator.discovery=static", "target.autoscaling.enabled=true"],
            "coordinator.discovery=static cannot follow target.autoscaling",
        ),
        (
            ["target.autoscaling.enabled=true", "target.resources.requests.cpu=null"],
            "target.autoscaling on CPU utilization needs target.resources.requests.cpu",
        ),
        (
            ["coordinator.autoscaling.enabled=true", "coordinator.autoscaling.maxReplicas=0"],
            "/coordinator/autoscaling/maxReplicas",
        ),
        (
            ["drafter.gpu.enabled=true", "drafter.settings.quantize=int8-weight-only"],
            "drafter.settings.quantize=int8-weight-only runs on the cpu only (device cuda)",
        ),
        (
            ["drafter.settings.quantize=int8-dynamic"],
            "drafter.settings.quantize=int8-dynamic computes in float32 (dtype bfloat16)",
        ),
        (
            ["target.settings.quantize=int8-weight-only", "target.settings.dtype=float16"],
            "target.settings.quantize=int8-weight-only computes in bfloat16 or float32",
        ),
        (
            ["drafter.autoscaling.enabled=true", "drafter.autoscaling.minReplicas=5"],
            "drafter.autoscaling.maxReplicas must be >= minReplicas",
        ),
        (
            ["coordinator.settings.discoArtifact=/opt/disco", "coordinator.settings.discoArtifactDir=/opt"],
            "discoArtifactDir is searched only with coordinator.settings.discoArtifact=auto",
        ),
        (
            ["drafter.enabled=false", "coordinator.settings.discoArtifactDir=/opt/disco"],
            "coordinator.settings.discoArtifact/discoArtifactDir load a stop classifier for the drafter",
        ),
        (
            ["drafter.enabled=false", "coordinator.settings.discoArtifact=/opt/disco/pair"],
            "coordinator.settings.discoArtifact/discoArtifactDir load a stop classifier for the drafter",
        ),
    ],
)
def test_inconsistent_values_fail_rendering(helm: Helm, assignments: list[str], message: str) -> None:
    result = helm.template(sets=assignments)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr


def test_custom_autoscaling_metrics_need_no_cpu_request(helm: Helm) -> None:
    metric = (
        "target.autoscaling.metrics[0].type=Pods,"
        "target.autoscaling.metrics[0].pods.metric.name=polyspec_queue_depth,"
        "target.autoscaling.metrics[0].pods.target.type=AverageValue,"
        "target.autoscaling.metrics[0].pods.target.averageValue=4"
    )
    manifests = helm.render(
        sets=["target.autoscaling.enabled=true", "target.resources.requests.cpu=null", metric]
    )
    hpa = manifests.one("HorizontalPodAutoscaler", "target")
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == "polyspec_queue_depth"


def test_large_numbers_reach_the_cli_as_integers(helm: Helm, tmp_path: Path) -> None:
    values = tmp_path / "values.yaml"
    values.write_text(
        "coordinator:\n  settings:\n    maxNewTokensCap: 1000000\n"
        "target:\n  settings:\n    cacheTtlSeconds: 2.5\n"
    )
    config = helm.render([values]).config()
    assert config["COORDINATOR_MAX_NEW_TOKENS_CAP"] == "1000000"
    assert config["TARGET_CACHE_TTL_SECONDS"] == "2.5"
