"""A target replica SIGKILLed in the middle of a DSI request: the request completes with the same greedy
output. Real ``polyspec serve model`` processes on tiny word-level models (forwards padded to a few
milliseconds so the request lasts long enough to be hit), an in-process coordinator whose default
scheduler is DSI."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from polyspec.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc

from coordinator.config import CoordinatorSettings
from coordinator.request import SchedulerName
from coordinator.server import start_coordinator
from core.serving.server import GrpcServerSettings
from tests.integration.real_services import Stub, static
from tests.integration.test_model_service_cli import wait_for_port
from tests.support.tiny_models import build_word_model

pytestmark = [pytest.mark.slow]

GREEDY = common_pb2.SamplingParams(temperature=0.0)
FORWARD_MS = 8.0  # every forward padded: about a second per request


def request(algorithm: common_pb2.Algorithm.ValueType) -> coordinator_pb2.GenerateRequest:
    return coordinator_pb2.GenerateRequest(
        prompt="w1 w2 w3 w4 w5",
        max_new_tokens=96,
        sampling=GREEDY,
        algorithm=algorithm,
        lookahead=static(3),
        ignore_eos=True,
    )


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Three target replicas and a drafter, each its own process."""
    root = tmp_path
    target = build_word_model(root / "target", "llama", seed=5)
    drafter = build_word_model(root / "drafter", "llama", seed=6)
    started: list[subprocess.Popen[bytes]] = []
    for index, model in enumerate((target, target, target, drafter)):
        port_file = root / f"port-{index}"
        command = [sys.executable, "-m", "tools.main", "serve", "model", "--model", str(model)]
        command += ["--port", "0", "--port-file", str(port_file), "--threads", "1"]
        command += ["--emulate-forward-ms", str(FORWARD_MS)]
        started.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        for index, process in enumerate(started):
            process.port = wait_for_port(root / f"port-{index}", process)  # type: ignore[attr-defined]
        yield started
    finally:
        for process in started:
            process.kill()
            process.wait()


async def test_a_killed_replica_mid_request_keeps_the_output(
    processes: list[subprocess.Popen[bytes]],
) -> None:
    addresses = [f"127.0.0.1:{p.port}" for p in processes]  # type: ignore[attr-defined]
    settings = CoordinatorSettings(
        target_addresses=tuple(addresses[:3]),
        drafter_address=addresses[3],
        default_scheduler=SchedulerName.DSI,
        min_call_timeout_seconds=1.0,
        eject_after_failures=1,
        grpc=GrpcServerSettings(port=0, shutdown_grace_seconds=0.0),
    )
    server = await start_coordinator(settings)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    stub: Stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)  # type: ignore[no-untyped-call]
    try:
        baseline = await stub.Generate(request(common_pb2.ALGORITHM_AR), timeout=120)
        before = await stub.Generate(request(common_pb2.ALGORITHM_SD), timeout=120)
        assert list(before.token_ids) == list(baseline.token_ids)
        registry = server.services.metrics.registry
        labels = {"algorithm": "sd", "scheduler": "dsi"}
        rounds_before = registry.get_sample_value("polyspec_rounds_total", labels) or 0.0
        running = asyncio.ensure_future(stub.Generate(request(common_pb2.ALGORITHM_SD), timeout=120))
        async with asyncio.timeout(60):
            while (registry.get_sample_value("polyspec_rounds_total", labels) or 0.0) < rounds_before + 5:
                await asyncio.sleep(0.005)
        assert not running.done(), "the request ended before a replica could be killed"
        victim = processes[0]
        os.kill(victim.pid, signal.SIGKILL)
        response = await running
        assert list(response.token_ids) == list(baseline.token_ids)
        assert response.stats.fallback_reason == ""
        after = await stub.Generate(request(common_pb2.ALGORITHM_SD), timeout=120)
        assert list(after.token_ids) == list(baseline.token_ids)
    finally:
        await channel.close(None)
        await server.stop(0)
