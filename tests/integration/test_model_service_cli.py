"""``polyspec serve model`` as a process: serves on the port it writes, drains on SIGTERM."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from polyspec.v1 import model_pb2, model_pb2_grpc

from tests.support.tiny_models import build_word_model

STARTUP_LIMIT_SECONDS = 120


def wait_for_port(port_file: Path, process: subprocess.Popen[bytes]) -> int:
    """Polls for the port file (the server writes it once serving)."""
    deadline = time.monotonic() + STARTUP_LIMIT_SECONDS
    while time.monotonic() < deadline:
        if port_file.exists():
            return int(port_file.read_text())
        if process.poll() is not None:
            pytest.fail(f"the server exited early with code {process.returncode}")
        time.sleep(0.1)
    pytest.fail("the server did not write its port file")


@pytest.mark.slow
def test_serve_model_writes_its_port_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    model_dir = build_word_model(tmp_path / "tiny-cli", "llama", seed=3)
    port_file = tmp_path / "port"
    command = [
        sys.executable,
        "-m",
        "tools.main",
        "serve",
        "model",
        "--model",
        str(model_dir),
        "--port",
        "0",
        "--port-file",
        str(port_file),
        "--max-draft-tokens",
        "4",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        port = wait_for_port(port_file, process)
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            info = model_pb2_grpc.ModelServiceStub(channel).Info(model_pb2.InfoRequest(), timeout=30)
        assert info.model_name == "tiny-cli"
        assert info.max_draft_tokens == 4
        process.terminate()
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr.decode(errors="replace")[-2000:]
        assert b"draining" in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
