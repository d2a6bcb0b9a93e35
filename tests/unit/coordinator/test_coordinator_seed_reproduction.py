"""When a request's seed reproduces its output (README, the SDK's ``seed``, the proto's ``seed``).

Greedy outputs never depend on the seed. A sampled output is reproduced by the same seed under a
deterministic lookahead (static, confidence) with the same models, whatever the timings; under
``auto`` the round boundaries follow measured costs, so only the output law is fixed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from polyspec.v1 import common_pb2, coordinator_pb2

from coordinator.server import CoordinatorServer
from tests.support.toy_lm import word_lm
from tests.support.toy_service import ToyServer
from tests.unit.coordinator.conftest import TARGET_SEED, coordinator_settings

StartToy = Callable[..., Awaitable[ToyServer]]
StartCoord = Callable[..., Awaitable[CoordinatorServer]]

SAMPLED = common_pb2.SamplingParams(temperature=0.9, top_p=0.95)
GREEDY = common_pb2.SamplingParams(temperature=0.0)
STATIC = coordinator_pb2.Lookahead(policy=coordinator_pb2.LOOKAHEAD_POLICY_STATIC, k=3)
CONFIDENCE = coordinator_pb2.Lookahead(
    policy=coordinator_pb2.LOOKAHEAD_POLICY_CONFIDENCE, k=6, confidence_threshold=0.5
)
AUTO = coordinator_pb2.Lookahead(policy=coordinator_pb2.LOOKAHEAD_POLICY_AUTO)


def request(
    sampling: common_pb2.SamplingParams, lookahead: coordinator_pb2.Lookahead, seed: int
) -> coordinator_pb2.GenerateRequest:
    return coordinator_pb2.GenerateRequest(
        prompt="beta gamma",
        max_new_tokens=30,
        sampling=sampling,
        algorithm=common_pb2.ALGORITHM_SD,
        lookahead=lookahead,
        seed=seed,
        ignore_eos=True,
    )


async def test_a_seed_reproduces_a_sampled_output_under_a_deterministic_lookahead(
    start_toy: StartToy, start_coord: StartCoord, channels: Any
) -> None:
    target = await start_toy(word_lm(TARGET_SEED), model_name="toy-target")
    drafter = await start_toy(word_lm(TARGET_SEED, noise=2.5), model_name="toy-drafter")
    first = channels((await start_coord(coordinator_settings(target.address, drafter.address))).port)
    second = channels((await start_coord(coordinator_settings(target.address, drafter.address))).port)
    for lookahead in (STATIC, CONFIDENCE):
        reference = await first.Generate(request(SAMPLED, lookahead, seed=11))
        assert reference.stats.draft_tokens > reference.stats.accepted_tokens > 0  # rejections happened
        # Another coordinator, after other traffic, with a slow drafter: other timings, same output.
        await second.Generate(request(SAMPLED, AUTO, seed=5))
        drafter.state.delay_seconds = 0.01
        again = await second.Generate(request(SAMPLED, lookahead, seed=11))
        drafter.state.delay_seconds = 0.0
        assert list(again.token_ids) == list(reference.token_ids), reference.stats.lookahead
        assert again.stats.rounds == reference.stats.rounds
        other = await first.Generate(request(SAMPLED, lookahead, seed=12))
        assert list(other.token_ids) != list(reference.token_ids)  # the seed does drive the draws


async def test_a_greedy_output_does_not_depend_on_the_seed_or_the_lookahead(
    start_toy: StartToy, start_coord: StartCoord, channels: Any
) -> None:
    target = await start_toy(word_lm(TARGET_SEED), model_name="toy-target")
    drafter = await start_toy(word_lm(TARGET_SEED, noise=2.5), model_name="toy-drafter")
    stub = channels((await start_coord(coordinator_settings(target.address, drafter.address))).port)
    outputs = {
        tuple((await stub.Generate(request(GREEDY, lookahead, seed))).token_ids)
        for lookahead in (STATIC, CONFIDENCE, AUTO)
        for seed in (1, 2, 3)
    }
    assert len(outputs) == 1
