"""A lookup drafter with a real target: greedy ``sd`` output equals ``ar`` output token for token.

SmolLM2-135M is the target; ``polyspec serve drafter``'s service reads the target's folder for its
tokenizer, so the coordinator pairs them as ``sd``. The prompt asks to repeat code it contains, so the
lookups propose often and the target accepts some of it.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from polyspec.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc

from coordinator.config import CoordinatorSettings
from coordinator.server import start_coordinator
from core.serving.server import GrpcServerSettings
from services.lookup.server import start_lookup_server
from services.lookup.settings import LookupKind, LookupServiceSettings
from services.model.server import start_model_server
from services.model.settings import ModelServiceSettings
from tests.support.greedy import assert_greedy_identical

pytestmark = [pytest.mark.real_model]

AR, SD = common_pb2.ALGORITHM_AR, common_pb2.ALGORITHM_SD
PROMPT = (
    "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n\n\n"
    "# The same two functions again, unchanged:\ndef add(a, b):\n"
)


@pytest.mark.parametrize("kind", ["ngram", "suffix"])
async def test_greedy_identity_with_a_real_target(kind: LookupKind, smollm2_dir: Path) -> None:
    transport = GrpcServerSettings(port=0, shutdown_grace_seconds=0.0)
    target = await start_model_server(ModelServiceSettings(model_dir=smollm2_dir, grpc=transport))
    drafter = await start_lookup_server(
        LookupServiceSettings(kind=kind, target_model_dir=smollm2_dir, grpc=transport)
    )
    coordinator = await start_coordinator(
        CoordinatorSettings(
            target_addresses=(f"127.0.0.1:{target.port}",),
            drafter_address=f"127.0.0.1:{drafter.port}",
            grpc=transport,
        )
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{coordinator.port}") as channel:
            stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)
            request = coordinator_pb2.GenerateRequest(
                prompt=PROMPT, max_new_tokens=32, sampling=common_pb2.SamplingParams(temperature=0.0)
            )
            request.algorithm = AR
            ar = await stub.Generate(request, timeout=120)
            request.algorithm = SD
            request.lookahead.CopyFrom(
                coordinator_pb2.Lookahead(policy=coordinator_pb2.LOOKAHEAD_POLICY_STATIC, k=6)
            )
            sd = await stub.Generate(request, timeout=120)
        assert_greedy_identical(sd, ar, sd.stats)
        assert sd.stats.algorithm == SD and not sd.stats.fallback_reason
        assert sd.stats.accepted_tokens > 0 and sd.stats.rounds < len(sd.token_ids)
    finally:
        await coordinator.stop(0)
        await drafter.stop(0)
        await target.stop(0)
