"""Fixtures of the coordinator tests: toy model services and coordinators over them, on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from polyspec.v1 import coordinator_pb2_grpc

from coordinator.config import CoordinatorSettings
from coordinator.server import CoordinatorServer, start_coordinator
from core.serving.server import GrpcServerSettings
from tests.support.toy_lm import ToyLM, word_lm
from tests.support.toy_service import ToyModel, ToyServer, start_toy_server, toy_info
from tests.support.toy_tokenizers import word_level_toy

TARGET_SEED = 7


@pytest.fixture(scope="session")
def toy_tokenizer() -> Any:
    return word_level_toy()


@pytest.fixture
async def start_toy(toy_tokenizer: Any) -> AsyncIterator[Callable[..., Awaitable[ToyServer]]]:
    """Starts toy model services; all stop at teardown."""
    started: list[ToyServer] = []

    async def start(lm: ToyLM | None = None, *, tokenizer: Any = None, **kwargs: Any) -> ToyServer:
        lm = lm or word_lm(TARGET_SEED)
        max_support = kwargs.pop("max_support", 8)
        info = toy_info(lm, tokenizer or toy_tokenizer, model_name=kwargs.pop("model_name", "toy"), **kwargs)
        server = await start_toy_server(ToyModel(lm, info, max_support=max_support))
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


def coordinator_settings(
    target: str | list[str], drafter: str | None = None, **kwargs: Any
) -> CoordinatorSettings:
    targets = (target,) if isinstance(target, str) else tuple(target)
    return CoordinatorSettings(
        drafter_address=drafter,
        target_addresses=targets,
        grpc=GrpcServerSettings(port=0, shutdown_grace_seconds=0.0),
        startup_timeout_seconds=kwargs.pop("startup_timeout_seconds", 10.0),
        **kwargs,
    )


@pytest.fixture
async def start_coord() -> AsyncIterator[Callable[..., Awaitable[CoordinatorServer]]]:
    """Starts coordinators; all stop at teardown."""
    started: list[CoordinatorServer] = []

    async def start(settings: CoordinatorSettings) -> CoordinatorServer:
        server = await start_coordinator(settings)
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop(0)


@pytest.fixture
async def channels() -> AsyncIterator[Callable[[int], coordinator_pb2_grpc.CoordinatorServiceStub]]:
    opened: list[grpc.aio.Channel] = []

    def stub(port: int) -> coordinator_pb2_grpc.CoordinatorServiceStub:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        opened.append(channel)
        return coordinator_pb2_grpc.CoordinatorServiceStub(channel)

    yield stub
    for channel in opened:
        await channel.close(None)
