"""Makefile targets that CI relies on: ``check-protos`` catches stale stubs; ``make test`` runs it and
prints the slowest tests. The targets run against a copy of the repository's protos and stubs."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def make(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``make ARGS`` in ``folder`` with this environment's tools, the venv stamp taken as up to date."""
    stamp = folder / "stamp"
    command = ["make", "--no-print-directory", "-C", str(folder), f"BIN={BIN}", f"STAMP={stamp}"]
    command += ["-o", str(stamp)]
    return subprocess.run([*command, *args], capture_output=True, text=True, check=False, timeout=300)


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """The Makefile, protos/ and the committed stubs, copied."""
    if shutil.which("make") is None:
        pytest.fail("make is missing")
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    shutil.copytree(ROOT / "protos", tmp_path / "protos")
    shutil.copytree(ROOT / "sdk" / "polyspec" / "v1", tmp_path / "sdk" / "polyspec" / "v1")
    return tmp_path


def test_check_protos_passes_on_fresh_stubs(checkout: Path) -> None:
    result = make(checkout, "check-protos")
    assert result.returncode == 0, result.stderr


def test_check_protos_fails_on_a_stale_stub(checkout: Path) -> None:
    stub = checkout / "sdk" / "polyspec" / "v1" / "model_pb2.pyi"
    stub.write_text(stub.read_text() + "# edited by hand\n")
    result = make(checkout, "check-protos")
    assert result.returncode != 0
    assert "model_pb2.pyi" in result.stdout
    assert "the stubs in sdk/polyspec/v1 differ from what protos/ generates" in result.stderr
    assert "run `make protos`" in result.stderr


def test_check_protos_fails_on_a_stub_without_a_proto(checkout: Path) -> None:
    (checkout / "sdk" / "polyspec" / "v1" / "retired_pb2.py").write_text("")
    result = make(checkout, "check-protos")
    assert result.returncode != 0 and "Only in" in result.stdout and "retired_pb2.py" in result.stdout


def test_make_test_checks_the_protos_and_prints_the_slowest_tests(checkout: Path) -> None:
    result = make(checkout, "-n", "test")  # dry run: prints the commands
    assert result.returncode == 0, result.stderr
    commands = result.stdout
    assert "grpc_tools.protoc" in commands and "diff -r" in commands
    [pytest_line] = [line for line in commands.splitlines() if "/pytest" in line]
    assert "--durations=30" in pytest_line.split()
