"""A low-precision drafter leaves the output law alone: Qwen2.5-Coder-0.5B with int8 linear layers
(bfloat16 with int8 weights; float32 int8-dynamic) drafting for Qwen2.5-Coder-1.5B in float32 gives the
target's greedy output token for token (up to recorded near-ties), and the statistics name both
precisions. The shipped DISCO artifacts are found for their pairs with the drafter in that precision
(Qwen2.5-Coder-0.5B, and SmolLM2-135M across vocabularies) and keep the target's greedy output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from polyspec.v1 import common_pb2, coordinator_pb2

from services.model.server import ModelServer
from tests.integration.real_services import Services, human_eval_prompts, static
from tests.support.greedy import assert_greedy_identical

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.real_model, pytest.mark.slow]

AR, SD = common_pb2.ALGORITHM_AR, common_pb2.ALGORITHM_SD
NEW_TOKENS = 24
PROMPTS = 2


# (dtype, quantize) of the drafter: the default of the demo, bench and chart, and the fastest for this pair.
PRECISIONS = [("bfloat16", "int8-weight-only"), ("float32", "int8-dynamic")]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def target(services: Services, qwen15_dir: Path) -> ModelServer:
    return await services.model(qwen15_dir)


@pytest.mark.parametrize(("dtype", "quantize"), PRECISIONS)
async def test_an_int8_drafter_keeps_the_targets_greedy_output(
    services: Services, target: ModelServer, qwen05_dir: Path, dtype: str, quantize: str
) -> None:
    drafter = await services.model(qwen05_dir, dtype=dtype, quantize=quantize)
    stub = await services.coordinator(target, drafter)
    accepted = 0
    for index, prompt in enumerate(human_eval_prompts(PROMPTS)):
        requests = {
            algorithm: coordinator_pb2.GenerateRequest(
                prompt=prompt,
                sampling=common_pb2.SamplingParams(temperature=0.0),
                algorithm=algorithm,
                lookahead=static(2 + index),
                max_new_tokens=NEW_TOKENS,
            )
            for algorithm in (AR, SD)
        }
        ar = await stub.Generate(requests[AR])
        sd = await stub.Generate(requests[SD])
        assert_greedy_identical(sd, ar, (prompt, sd.stats))
        assert sd.stats.algorithm == SD and not sd.stats.fallback_reason
        assert (sd.stats.drafter_dtype, sd.stats.target_dtype) == (f"{dtype}+{quantize}", "float32")
        assert ar.stats.drafter_dtype == ""
        accepted += sd.stats.accepted_tokens
    assert accepted > 0  # the int8 drafter's drafts are accepted


async def test_the_shipped_disco_artifact_is_found_for_the_pair(
    services: Services, target: ModelServer, qwen05_dir: Path
) -> None:
    """``--disco-artifact auto`` finds the stop classifier shipped for Qwen2.5-Coder-0.5B -> 1.5B by the
    model fingerprints (the drafter in the chart's default precision), and disco and auto with the
    classifier give the target's greedy output."""
    dtype, quantize = PRECISIONS[0]
    drafter = await services.model(qwen05_dir, dtype=dtype, quantize=quantize)
    stub = await services.coordinator(target, drafter, disco_artifact="auto")
    policies = {
        "disco": coordinator_pb2.Lookahead(policy=coordinator_pb2.LOOKAHEAD_POLICY_DISCO, k=8),
        "auto": coordinator_pb2.Lookahead(policy=coordinator_pb2.LOOKAHEAD_POLICY_AUTO),
    }
    for prompt in human_eval_prompts(PROMPTS):
        ar = await stub.Generate(_greedy_request(prompt, AR))
        for name, lookahead in policies.items():
            response = await stub.Generate(_greedy_request(prompt, SD, lookahead))
            assert_greedy_identical(response, ar, (prompt, name, response.stats))
            assert response.stats.algorithm == SD and not response.stats.fallback_reason
            assert response.stats.lookahead.startswith(name), response.stats.lookahead


async def test_the_shipped_slem_artifact_stops_cross_vocabulary_drafts(
    services: Services, target: ModelServer, smollm2_dir: Path
) -> None:
    """SmolLM2-135M (another tokenizer) drafting for Qwen2.5-Coder-1.5B: ``auto`` finds the shipped
    SLEM-label artifact, plain ``disco`` drafts up to its trained k (8), and slem and tli with ``disco``
    and ``auto`` give the target's greedy output."""
    dtype, quantize = PRECISIONS[0]
    drafter = await services.model(smollm2_dir, dtype=dtype, quantize=quantize)
    stub = await services.coordinator(target, drafter, disco_artifact="auto")
    policies = {
        "disco:8": coordinator_pb2.Lookahead(policy=coordinator_pb2.LOOKAHEAD_POLICY_DISCO),
        "auto": coordinator_pb2.Lookahead(policy=coordinator_pb2.LOOKAHEAD_POLICY_AUTO),
    }
    drafted = 0
    for prompt in human_eval_prompts(PROMPTS):
        ar = await stub.Generate(_greedy_request(prompt, AR))
        for algorithm in (common_pb2.ALGORITHM_SLEM, common_pb2.ALGORITHM_TLI):
            for name, lookahead in policies.items():
                response = await stub.Generate(_greedy_request(prompt, algorithm, lookahead))
                assert_greedy_identical(response, ar, (prompt, algorithm, name, response.stats))
                assert response.stats.algorithm == algorithm and not response.stats.fallback_reason
                assert response.stats.lookahead.startswith(name), response.stats.lookahead
                drafted += response.stats.draft_tokens
    assert drafted > 0


def _greedy_request(
    prompt: str, algorithm: Any, lookahead: coordinator_pb2.Lookahead | None = None
) -> coordinator_pb2.GenerateRequest:
    return coordinator_pb2.GenerateRequest(
        prompt=prompt,
        sampling=common_pb2.SamplingParams(temperature=0.0),
        algorithm=algorithm,
        lookahead=lookahead,
        max_new_tokens=NEW_TOKENS,
    )
