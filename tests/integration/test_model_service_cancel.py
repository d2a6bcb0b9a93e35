"""A Draft/Score whose caller cancels it stops computing: real gRPC calls on a tiny model, padded forwards.

Every forward is padded to a long emulated latency, so an uncancelled call would run for seconds; the
assertions count forwards and cancelled calls (engine totals, Info, Prometheus), never durations. The
time bounds only keep a broken build from hanging.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from polyspec.v1 import common_pb2, model_pb2, model_pb2_grpc

from core.serving.server import GrpcServerSettings
from services.model.server import ModelServer, start_model_server
from services.model.settings import ModelServiceSettings
from tests.support.tiny_models import build_word_model

CONTEXT = [3 + (7 * i) % 250 for i in range(20)]
PAD_SECONDS = 1.0  # per forward: a 12-token draft would take 12 s uncancelled
WAIT_BOUND_SECONDS = 30.0
GREEDY = common_pb2.SamplingParams(temperature=0.0)
if TYPE_CHECKING:  # the async stub type exists in the stubs' .pyi only
    Served = tuple[ModelServer, model_pb2_grpc.ModelServiceAsyncStub]


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_word_model(tmp_path_factory.mktemp("cancel") / "tiny-llama", "llama", seed=11)


@pytest.fixture
async def served(llama_dir: Path) -> AsyncIterator[Served]:
    settings = ModelServiceSettings(
        model_dir=llama_dir,
        grpc=GrpcServerSettings(host="127.0.0.1", port=0, shutdown_grace_seconds=0.5),
        emulated_forward_seconds=PAD_SECONDS,
        metrics_port=0,
        max_queue=4,
    )
    server = await start_model_server(settings)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    try:
        yield server, model_pb2_grpc.ModelServiceStub(channel)
    finally:
        await channel.close(grace=None)
        await server.stop(grace=0)


async def wait_until(condition: Callable[[], bool]) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT_BOUND_SECONDS
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def context(sequence_id: str, tokens: list[int]) -> model_pb2.TokenContext:
    return model_pb2.TokenContext(sequence_id=sequence_id, tokens=tokens)


def metrics_text(server: ModelServer) -> str:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as page:
        return str(page.read().decode())


async def cancelled(call: grpc.aio.UnaryUnaryCall[Any, Any]) -> None:
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call


async def test_a_draft_cancelled_mid_way_stops_within_one_forward(served: Served) -> None:
    server, stub = served
    request = model_pb2.DraftRequest(context=context("d", CONTEXT), max_draft_tokens=12, sampling=GREEDY)
    call = stub.Draft(request)
    await wait_until(lambda: server.engine.forwards_served >= 1)  # the first forward ran; its pad is on
    await cancelled(call)
    await wait_until(lambda: server.worker.depth == 0)
    assert 1 <= server.engine.forwards_served <= 2  # not 12: stopped in the pad or before the next forward
    text = metrics_text(server)
    assert "polyspec_model_cancelled_calls_total 1.0" in text
    assert f"polyspec_model_forwards_total {float(server.engine.forwards_served)}" in text
    info = await stub.Info(model_pb2.InfoRequest())
    assert info.forwards_served == server.engine.forwards_served and info.emulated_overruns == 0
    # What the cancelled call fed stays cached: the next call on the sequence reuses the context.
    held = server.engine.cache.held_tokens("d")
    assert held is not None and held[: len(CONTEXT)] == CONTEXT


async def test_a_score_cancelled_in_its_pad_stops_there(served: Served) -> None:
    server, stub = served
    call = stub.Score(model_pb2.ScoreRequest(context=context("s", CONTEXT), candidate_tokens=[5, 6]))
    await wait_until(lambda: server.engine.forwards_served == 1)  # its one forward ran; the pad is on
    await cancelled(call)
    await wait_until(lambda: server.worker.depth == 0)
    assert "polyspec_model_cancelled_calls_total 1.0" in metrics_text(server)  # the pad was cut short


async def test_a_cancelled_call_that_has_not_started_is_skipped(served: Served) -> None:
    server, stub = served
    first = stub.Score(model_pb2.ScoreRequest(context=context("a", CONTEXT), candidate_tokens=[5]))
    await wait_until(lambda: server.engine.forwards_served == 1)
    queued = stub.Score(model_pb2.ScoreRequest(context=context("b", CONTEXT), candidate_tokens=[5]))
    await wait_until(lambda: server.worker.depth == 2)
    await cancelled(queued)
    response = await first
    assert response.stats.forwards == 1
    await wait_until(lambda: server.worker.depth == 0)
    assert server.engine.forwards_served == 1  # the queued call never ran
    assert server.engine.cache.held_tokens("b") is None
    assert "polyspec_model_cancelled_calls_total 0.0" in metrics_text(server)
