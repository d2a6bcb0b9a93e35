"""Helpers for the e2e tests: the installed ``polyspec`` command and a local smollm2 stack."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.demo import LocalStack, start_pair

STARTUP_TIMEOUT_SECONDS = 600.0


def polyspec_command() -> list[str]:
    """The console script installed with the project (what the README runs)."""
    script = Path(sys.executable).with_name("polyspec")
    if not script.exists():
        pytest.fail("the polyspec console script is missing from the environment: run `make venv`")
    return [str(script)]


def run_polyspec(args: list[str], timeout: float = 900.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*polyspec_command(), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def processes_mentioning(text: str) -> list[int]:
    """Pids of the live processes whose command line contains ``text`` (Linux /proc)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().decode(errors="replace"):
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


@pytest.fixture(scope="module")
def smollm2_stack(smollm2_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`serve model` twice (drafter and target: SmolLM2-135M) and `serve coordinator`; yields its address."""
    log_dir = tmp_path_factory.mktemp("e2e-stack")
    with LocalStack(log_dir, log_level="WARNING") as stack:
        yield start_pair(stack, smollm2_dir, smollm2_dir, STARTUP_TIMEOUT_SECONDS, io.StringIO())
