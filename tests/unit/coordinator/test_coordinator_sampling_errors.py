"""Bad sampling values reach the caller of Generate as INVALID_ARGUMENT naming the field (never INTERNAL).

``core.sampling.SamplingConfig`` is the one place the warpers are validated; the coordinator builds
one from the request and its error travels through the error interceptor.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from polyspec.v1 import common_pb2, coordinator_pb2

from coordinator.server import CoordinatorServer
from core.sampling import MIN_TEMPERATURE
from tests.support.toy_lm import word_lm
from tests.support.toy_service import ToyServer
from tests.unit.coordinator.conftest import TARGET_SEED, coordinator_settings

StartToy = Callable[..., Awaitable[ToyServer]]
StartCoord = Callable[..., Awaitable[CoordinatorServer]]

BAD_SAMPLING: list[tuple[str, common_pb2.SamplingParams, str]] = [
    ("sampling.temperature", common_pb2.SamplingParams(temperature=1e-4), f">= {MIN_TEMPERATURE}"),
    ("sampling.temperature", common_pb2.SamplingParams(temperature=1e-30), f">= {MIN_TEMPERATURE}"),
    ("sampling.temperature", common_pb2.SamplingParams(temperature=-0.5), f">= {MIN_TEMPERATURE}"),
    ("sampling.temperature", common_pb2.SamplingParams(temperature=math.inf), f">= {MIN_TEMPERATURE}"),
    ("sampling.temperature", common_pb2.SamplingParams(temperature=math.nan), f">= {MIN_TEMPERATURE}"),
    ("sampling.top_k", common_pb2.SamplingParams(top_k=-2), ">= 0"),
    ("sampling.top_p", common_pb2.SamplingParams(top_p=0.0), "(0, 1]"),
    ("sampling.top_p", common_pb2.SamplingParams(top_p=1.25), "(0, 1]"),
]


async def test_bad_sampling_values_are_invalid_argument_naming_the_field(
    start_toy: StartToy, start_coord: StartCoord, channels: Any
) -> None:
    target = await start_toy(word_lm(TARGET_SEED))
    drafter = await start_toy(word_lm(TARGET_SEED, noise=1.0))
    server = await start_coord(coordinator_settings(target.address, drafter.address))
    stub = channels(server.port)
    for field, sampling, allowed in BAD_SAMPLING:
        for stream in (False, True):
            request = coordinator_pb2.GenerateRequest(prompt="alpha", max_new_tokens=4, sampling=sampling)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                if stream:
                    stream_request = coordinator_pb2.GenerateStreamRequest(request=request)
                    _ = [chunk async for chunk in stub.GenerateStream(stream_request)]
                else:
                    await stub.Generate(request)
            details = str(info.value.details())
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (field, details)
            assert details.startswith(f"{field}: must "), details
            assert allowed in details and "got " in details, details
    assert not target.state.calls and not drafter.state.calls  # refused before any model call
    smallest = coordinator_pb2.GenerateRequest(
        prompt="alpha",
        max_new_tokens=4,
        sampling=common_pb2.SamplingParams(temperature=MIN_TEMPERATURE),
        algorithm=common_pb2.ALGORITHM_SD,
        ignore_eos=True,
    )
    assert len((await stub.Generate(smallest)).token_ids) == 4  # the smallest accepted value works
