"""Greedy identity under the DSI scheduler with real models and several in-process target replicas.

SmolLM2-135M drafting for Qwen2.5-Coder-0.5B (TLI and SLEM across two real vocabularies) with 2 target
replicas, and a tiny random llama on SmolLM2's vocabulary drafting for SmolLM2-135M (sd, frequent
rejections) with 2 and 4: every output equals ``ar``'s token for token (up to a recorded near-tie).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from polyspec.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc

from coordinator.config import CoordinatorSettings
from coordinator.request import SchedulerName
from coordinator.server import start_coordinator
from core.serving.server import GrpcServerSettings
from services.model.server import ModelServer
from tests.integration.real_services import Services, Stub, address, human_eval_prompts, static
from tests.support.greedy import assert_greedy_identical

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.real_model, pytest.mark.slow]

AR, SD = common_pb2.ALGORITHM_AR, common_pb2.ALGORITHM_SD
TLI, SLEM = common_pb2.ALGORITHM_TLI, common_pb2.ALGORITHM_SLEM
GREEDY = common_pb2.SamplingParams(temperature=0.0)
NEW_TOKENS = 24
PROMPTS = 2


def request(
    prompt: str, algorithm: common_pb2.Algorithm.ValueType, k: int = 3
) -> coordinator_pb2.GenerateRequest:
    return coordinator_pb2.GenerateRequest(
        prompt=prompt, max_new_tokens=NEW_TOKENS, sampling=GREEDY, algorithm=algorithm, lookahead=static(k)
    )


async def dsi_stub(services: Services, targets: list[ModelServer], drafter: ModelServer) -> Stub:
    settings = CoordinatorSettings(
        target_addresses=tuple(address(t) for t in targets),
        drafter_address=address(drafter),
        default_scheduler=SchedulerName.DSI,
        grpc=GrpcServerSettings(port=0, shutdown_grace_seconds=0.0),
    )
    server = await start_coordinator(settings)
    services.coordinators.append(server)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    services.channels.append(channel)
    return coordinator_pb2_grpc.CoordinatorServiceStub(channel)  # type: ignore[no-untyped-call,no-any-return]


async def check(stub: Stub, algorithms: tuple[common_pb2.Algorithm.ValueType, ...], context: Any) -> None:
    drafted = 0
    for prompt in human_eval_prompts(PROMPTS):
        ar = await stub.Generate(request(prompt, AR))
        for algorithm in algorithms:
            dsi = await stub.Generate(request(prompt, algorithm))
            assert_greedy_identical(dsi, ar, (context, algorithm, prompt, dsi.stats))
            assert not dsi.stats.fallback_reason, dsi.stats.fallback_reason
            drafted += dsi.stats.draft_tokens
    assert drafted > 0


async def test_smollm2_drafting_for_qwen_with_two_replicas(
    services: Services, qwen05_dir: Path, smollm2_dir: Path
) -> None:
    targets = [await services.model(qwen05_dir) for _ in range(2)]
    stub = await dsi_stub(services, targets, await services.model(smollm2_dir))
    await check(stub, (TLI, SLEM), "qwen x2")


@pytest.mark.parametrize("replicas", [2, 4])
async def test_tiny_drafter_for_smollm2(
    services: Services, smollm2_dir: Path, tiny_llama_smollm2_vocab_dir: Path, replicas: int
) -> None:
    targets = [await services.model(smollm2_dir) for _ in range(replicas)]
    stub = await dsi_stub(services, targets, await services.model(tiny_llama_smollm2_vocab_dir))
    await check(stub, (SD,), f"smollm2 x{replicas}")
