"""Stopped processes (SIGSTOP): a hung target replica or drafter costs a request a few call timeouts, never
its output. Real ``polyspec serve model`` processes on tiny word-level models, an in-process coordinator."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
import pytest_asyncio
from polyspec.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc

from coordinator.config import CoordinatorSettings
from coordinator.server import CoordinatorServer, start_coordinator
from core.serving.server import GrpcServerSettings
from tests.integration.real_services import Stub, static
from tests.integration.test_model_service_cli import wait_for_port
from tests.support.tiny_models import build_word_model

pytestmark = [pytest.mark.slow, pytest.mark.asyncio(loop_scope="module")]

MIN_CALL_TIMEOUT = 1.0  # tiny models step in milliseconds: every call's timeout is this floor
# A request that meets a hung service pays a few call timeouts (a Score re-sent, a Draft given up).
FEW_TIMEOUTS = 4 * MIN_CALL_TIMEOUT + 3.0
PROMPT = "w1 w2 w3 w4 w5"
GREEDY = common_pb2.SamplingParams(temperature=0.0)


def request(algorithm: common_pb2.Algorithm.ValueType) -> coordinator_pb2.GenerateRequest:
    return coordinator_pb2.GenerateRequest(
        prompt=PROMPT,
        max_new_tokens=24,
        sampling=GREEDY,
        algorithm=algorithm,
        lookahead=static(3),
        ignore_eos=True,
    )


@pytest.fixture(scope="module")
def processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[subprocess.Popen[bytes]]]:
    """Two target replicas and a drafter, each its own process (so each can be stopped)."""
    root = tmp_path_factory.mktemp("hung")
    target = build_word_model(root / "target", "llama", seed=5)
    drafter = build_word_model(root / "drafter", "llama", seed=6)
    started: list[subprocess.Popen[bytes]] = []
    for index, model in enumerate((target, target, drafter)):
        port_file = root / f"port-{index}"
        command = [sys.executable, "-m", "tools.main", "serve", "model", "--model", str(model)]
        command += ["--port", "0", "--port-file", str(port_file), "--threads", "1"]
        started.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        for index, process in enumerate(started):
            process.port = wait_for_port(root / f"port-{index}", process)  # type: ignore[attr-defined]
        yield started
    finally:
        for process in started:
            os.kill(process.pid, signal.SIGCONT)
            process.kill()
            process.wait()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def coordinator(
    processes: list[subprocess.Popen[bytes]],
) -> AsyncIterator[tuple[CoordinatorServer, Stub]]:
    first, second, drafter = (f"127.0.0.1:{p.port}" for p in processes)  # type: ignore[attr-defined]
    settings = CoordinatorSettings(
        target_addresses=(first, second),
        drafter_address=drafter,
        min_call_timeout_seconds=MIN_CALL_TIMEOUT,
        eject_after_failures=1,
        grpc=GrpcServerSettings(port=0, shutdown_grace_seconds=0.0),
    )
    server = await start_coordinator(settings)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    stub: Stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)  # type: ignore[no-untyped-call]
    yield server, stub
    await channel.close(None)
    await server.stop(0)


async def timed(
    stub: Stub, algorithm: common_pb2.Algorithm.ValueType
) -> tuple[coordinator_pb2.GenerateResponse, float]:
    started = time.monotonic()
    response = await stub.Generate(request(algorithm), timeout=120)
    return response, time.monotonic() - started


async def test_a_stopped_target_replica_costs_a_few_timeouts_and_no_output(
    processes: list[subprocess.Popen[bytes]],
    coordinator: tuple[CoordinatorServer, Stub],
) -> None:
    server, stub = coordinator
    baseline, _ = await timed(stub, common_pb2.ALGORITHM_AR)
    for _ in range(2):  # both replicas measured
        await asyncio.gather(timed(stub, common_pb2.ALGORITHM_SD), timed(stub, common_pb2.ALGORITHM_SD))
    stopped = processes[0]
    os.kill(stopped.pid, signal.SIGSTOP)
    try:
        results = await asyncio.gather(*(timed(stub, common_pb2.ALGORITHM_SD) for _ in range(4)))
        for response, seconds in results:
            assert list(response.token_ids) == list(baseline.token_ids)
            assert seconds < FEW_TIMEOUTS, seconds
        assert server.services.targets.replica(f"127.0.0.1:{stopped.port}").ejected  # type: ignore[attr-defined]
        registry = server.services.metrics.registry
        for event in ("timeout", "resent", "ejected"):
            labels = {"role": "target", "event": event}
            assert (registry.get_sample_value("polyspec_replica_events_total", labels) or 0) >= 1, event
    finally:
        os.kill(stopped.pid, signal.SIGCONT)


async def test_a_stopped_drafter_trips_the_breaker_and_comes_back(
    processes: list[subprocess.Popen[bytes]],
    coordinator: tuple[CoordinatorServer, Stub],
) -> None:
    server, stub = coordinator
    baseline, _ = await timed(stub, common_pb2.ALGORITHM_AR)
    drafter = processes[2]
    os.kill(drafter.pid, signal.SIGSTOP)
    try:
        for _ in range(4):
            response, seconds = await timed(stub, common_pb2.ALGORITHM_SD)
            assert list(response.token_ids) == list(baseline.token_ids)
            assert seconds < FEW_TIMEOUTS, seconds
        assert not server.services.drafters.usable()  # type: ignore[union-attr]
        assert "the drafter was ejected" in response.stats.fallback_reason
        assert response.stats.draft_tokens == 0
    finally:
        os.kill(drafter.pid, signal.SIGCONT)
    deadline = time.monotonic() + 30
    while not server.services.drafters.usable():  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the drafter was not probed back"
        await asyncio.sleep(0.1)
    response, _ = await timed(stub, common_pb2.ALGORITHM_SD)
    assert list(response.token_ids) == list(baseline.token_ids)
    assert response.stats.draft_tokens > 0 and not response.stats.fallback_reason
