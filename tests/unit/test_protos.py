"""The committed stubs in sdk/polyspec/v1 are exactly what `make protos` generates."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _generate(out: Path) -> None:
    protos = sorted(str(p.relative_to(ROOT / "protos")) for p in (ROOT / "protos").rglob("*.proto"))
    bin_dir = Path(sys.executable).parent
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        "-I",
        str(ROOT / "protos"),
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        f"--plugin=protoc-gen-mypy={bin_dir / 'protoc-gen-mypy'}",
        f"--mypy_out={out}",
        f"--plugin=protoc-gen-mypy_grpc={bin_dir / 'protoc-gen-mypy_grpc'}",
        f"--mypy_grpc_out={out}",
        *protos,
    ]
    subprocess.run(cmd, check=True, cwd=ROOT / "protos", capture_output=True)


def test_generated_stubs_are_fresh(tmp_path: Path) -> None:
    if shutil.which("protoc-gen-mypy", path=str(Path(sys.executable).parent)) is None:
        pytest.fail("protoc-gen-mypy is missing from the environment: run `make venv`")
    _generate(tmp_path)
    generated = sorted(p.relative_to(tmp_path) for p in (tmp_path / "polyspec" / "v1").glob("*_pb2*"))
    committed_dir = ROOT / "sdk" / "polyspec" / "v1"
    committed = sorted(p.relative_to(ROOT / "sdk") for p in committed_dir.glob("*_pb2*"))
    assert generated == committed, "stub files differ: run `make protos` and commit"
    for rel in generated:
        fresh = (tmp_path / rel).read_text()
        assert fresh == (ROOT / "sdk" / rel).read_text(), f"{rel} is stale: run `make protos` and commit"


def test_prefix_checksum_is_stable() -> None:
    from core.checksum import prefix_checksum

    # Both ends of the wire compute this value; it must never change within polyspec.v1.
    assert prefix_checksum([]) == prefix_checksum(())
    assert prefix_checksum([1, 2, 3]) != prefix_checksum([1, 2, 4])
    assert prefix_checksum([1, 2, 3]) == 11402386789778234582
    assert prefix_checksum([]) == 13020603013274838756
