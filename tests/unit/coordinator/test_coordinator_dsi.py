"""The DSI scheduler through a real coordinator over toy model services with several target replicas.

The coordinator's default scheduler is DSI (``default_scheduler``); greedy output equals ``ar``'s token
for token, verifications fan out over the replicas, every replica that served the request releases its
cache, a failing replica's verifications are re-sent, and ``auto`` keeps SI with one replica.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

import pytest
from polyspec.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc

from coordinator.request import SchedulerName
from coordinator.server import CoordinatorServer
from core.errors import UnavailableError
from tests.support.toy_lm import word_lm
from tests.support.toy_service import ToyServer
from tests.unit.coordinator.conftest import TARGET_SEED, coordinator_settings

StartToy = Callable[..., Awaitable[ToyServer]]
StartCoord = Callable[..., Awaitable[CoordinatorServer]]
Stub: TypeAlias = "coordinator_pb2_grpc.CoordinatorServiceAsyncStub"  # type-check-only class

AR, SD = common_pb2.ALGORITHM_AR, common_pb2.ALGORITHM_SD
GREEDY = common_pb2.SamplingParams(temperature=0.0)
PROMPTS = ["alpha", "beta gamma", "delta delta delta", "kappa lambda mu nu xi"]


def request(
    prompt: str, algorithm: common_pb2.Algorithm.ValueType, k: int = 2
) -> coordinator_pb2.GenerateRequest:
    lookahead = coordinator_pb2.Lookahead(policy=coordinator_pb2.LOOKAHEAD_POLICY_STATIC, k=k)
    return coordinator_pb2.GenerateRequest(
        prompt=prompt, max_new_tokens=24, sampling=GREEDY, algorithm=algorithm, lookahead=lookahead
    )


async def dsi_service(
    start_toy: StartToy, start_coord: StartCoord, replicas: int, scheduler: SchedulerName = SchedulerName.DSI
) -> tuple[CoordinatorServer, list[ToyServer], ToyServer]:
    targets = [await start_toy(word_lm(TARGET_SEED)) for _ in range(replicas)]
    for target in targets:
        target.state.delay_seconds = 0.002  # verifications overlap drafting
    drafter = await start_toy(word_lm(TARGET_SEED, noise=1.5), model_name="toy-drafter")
    settings = coordinator_settings(
        [t.address for t in targets], drafter.address, default_scheduler=scheduler, call_retry_seconds=2.0
    )
    return await start_coord(settings), targets, drafter


def sample(coordinator: CoordinatorServer, name: str, labels: dict[str, str]) -> float:
    return coordinator.services.metrics.registry.get_sample_value(name, labels) or 0.0


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(5.0):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("replicas", [2, 4])
async def test_greedy_dsi_equals_ar_and_fans_out(
    start_toy: StartToy, start_coord: StartCoord, channels: Any, replicas: int
) -> None:
    coordinator, targets, drafter = await dsi_service(start_toy, start_coord, replicas)
    stub = channels(coordinator.port)
    drafted = 0
    for toy in (*targets, drafter):
        toy.state.report_compute = True
    for prompt in PROMPTS:
        ar = await stub.Generate(request(prompt, AR))
        dsi = await stub.Generate(request(prompt, SD))
        assert list(dsi.token_ids) == list(ar.token_ids), prompt
        drafted += dsi.stats.draft_tokens
        # every answered call counted; the sums may exceed total_seconds (calls overlap under DSI)
        assert 0 < dsi.stats.target_compute_seconds < dsi.stats.target_call_seconds
        assert dsi.stats.drafter_compute_seconds <= dsi.stats.drafter_call_seconds
    assert drafted > 0
    assert sum(t.state.score_forwards > 0 for t in targets) >= 2, "verifications fanned out"
    rounds = sample(coordinator, "polyspec_rounds_total", {"algorithm": "sd", "scheduler": "dsi"})
    assert rounds > 0
    finished = [
        sample(
            coordinator,
            "polyspec_requests_total",
            {"algorithm": "sd", "finish_reason": r, "scheduler": "dsi"},
        )
        for r in ("length", "stop")
    ]
    assert sum(finished) == len(PROMPTS)
    assert sample(coordinator, "polyspec_target_tokens_computed_total", {"scheduler": "dsi"}) > 0
    await until(lambda: not any(t.state.held for t in targets) and not drafter.state.held)


async def test_a_failing_replica_has_its_verifications_resent(
    start_toy: StartToy, start_coord: StartCoord, channels: Any
) -> None:
    coordinator, targets, _ = await dsi_service(start_toy, start_coord, 3)
    stub = channels(coordinator.port)
    baseline = await stub.Generate(request(PROMPTS[3], AR))
    targets[0].state.fail_next.extend([UnavailableError("replica restarting")] * 4)
    again = await stub.Generate(request(PROMPTS[3], SD))
    assert list(again.token_ids) == list(baseline.token_ids)
    assert again.stats.fallback_reason == ""


async def test_auto_keeps_si_with_one_replica(
    start_toy: StartToy, start_coord: StartCoord, channels: Any
) -> None:
    coordinator, _, _ = await dsi_service(start_toy, start_coord, 1, SchedulerName.AUTO)
    stub = channels(coordinator.port)
    await stub.Generate(request(PROMPTS[0], SD))
    assert sample(coordinator, "polyspec_rounds_total", {"algorithm": "sd", "scheduler": "si"}) > 0
    assert sample(coordinator, "polyspec_rounds_total", {"algorithm": "sd", "scheduler": "dsi"}) == 0
