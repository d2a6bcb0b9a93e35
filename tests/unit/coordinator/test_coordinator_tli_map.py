"""TLI needs an injective drafter -> target map: the pair's map is validated at start-up.

A map that fails ``core.restrict.validate_drafter_to_target`` refuses TLI for that pair (logged, and
INVALID_ARGUMENT naming ``algorithm`` for a request asking for it); ``auto`` samples with SLEM instead,
and SLEM and SLRS still run.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from polyspec.v1 import common_pb2, coordinator_pb2

import coordinator.pair
from coordinator.server import CoordinatorServer
from coordinator.vocab import IntersectionMap, build_intersection
from tests.support.toy_lm import CODE_REFERENCE, ReferenceLM
from tests.support.toy_service import ToyServer
from tests.support.toy_tokenizers import byte_level_transformers, sentencepiece_transformers
from tests.unit.coordinator.conftest import TARGET_SEED, coordinator_settings

StartToy = Callable[..., Awaitable[ToyServer]]
StartCoord = Callable[..., Awaitable[CoordinatorServer]]

TLI, SLEM, SLRS = common_pb2.ALGORITHM_TLI, common_pb2.ALGORITHM_SLEM, common_pb2.ALGORITHM_SLRS
AUTO = common_pb2.ALGORITHM_AUTO
SAMPLED = common_pb2.SamplingParams(temperature=0.8)
STATIC = coordinator_pb2.Lookahead(policy=coordinator_pb2.LOOKAHEAD_POLICY_STATIC, k=3)


def non_injective(*args: Any, **kwargs: Any) -> IntersectionMap:
    """``build_intersection``'s map with a second drafter token sent to the first one's target id."""
    built = build_intersection(*args, **kwargs)
    drafter_ids, target_ids = built.mapped_pairs()
    broken = built.drafter_to_target.copy()
    broken[drafter_ids[1]] = target_ids[0]
    return IntersectionMap(broken, built.drafter_vocab_size, built.target_rows)


class ErrorLog:
    """Stands in for the module's logger; records error events."""

    def __init__(self) -> None:
        self.errors: list[tuple[str, dict[str, Any]]] = []

    def error(self, event: str, **fields: Any) -> None:
        self.errors.append((event, fields))

    def __getattr__(self, level: str) -> Callable[..., None]:
        return lambda *args, **kwargs: None


def request(algorithm: common_pb2.Algorithm.ValueType, **fields: Any) -> coordinator_pb2.GenerateRequest:
    return coordinator_pb2.GenerateRequest(
        prompt="def fibonacci(n):\n", max_new_tokens=12, algorithm=algorithm, seed=3, **fields
    )


async def test_a_non_injective_intersection_map_refuses_tli_for_the_pair(
    monkeypatch: pytest.MonkeyPatch, start_toy: StartToy, start_coord: StartCoord, channels: Any
) -> None:
    monkeypatch.setattr(coordinator.pair, "build_intersection", non_injective)
    # As for a vocabulary too large for the start-up decode check (which would drop the bad pair).
    monkeypatch.setattr(coordinator.pair, "DECODE_CHECK_MAX_PAIRS", 0)
    log = ErrorLog()
    monkeypatch.setattr(coordinator.pair, "log", log)
    target_tokenizer, drafter_tokenizer = byte_level_transformers(), sentencepiece_transformers()
    target_lm = ReferenceLM(target_tokenizer, seed=TARGET_SEED, reference=CODE_REFERENCE, bonus=6.0)
    drafter_lm = ReferenceLM(drafter_tokenizer, seed=TARGET_SEED + 1, reference=CODE_REFERENCE, bonus=4.0)
    target = await start_toy(target_lm, tokenizer=target_tokenizer, eos_token_ids=[target_lm.eos])
    drafter = await start_toy(drafter_lm, tokenizer=drafter_tokenizer, eos_token_ids=[drafter_lm.eos])
    server = await start_coord(coordinator_settings(target.address, drafter.address))
    stub = channels(server.port)

    pair = server.services.pair
    assert pair.cross_vocabulary and "must be injective" in pair.tli_error
    assert [event for event, _ in log.errors] == ["tli_refused"]
    assert log.errors[0][1]["reason"] == pair.tli_error

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(request(TLI, sampling=SAMPLED))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(info.value.details()).startswith("algorithm: tli is refused for this pair"), (
        info.value.details()
    )
    assert "injective" in str(info.value.details())

    sampled = await stub.Generate(request(AUTO, sampling=SAMPLED))
    assert sampled.stats.algorithm == SLEM and "tli is refused" in sampled.stats.fallback_reason
    for algorithm in (SLEM, SLRS):
        response = await stub.Generate(request(algorithm, sampling=SAMPLED, lookahead=STATIC))
        assert response.stats.algorithm == algorithm and response.stats.draft_tokens > 0
    assert not drafter.state.mask_registrations  # TLI's token mask was never used


async def test_a_valid_map_leaves_tli_available(start_toy: StartToy, start_coord: StartCoord) -> None:
    target_tokenizer, drafter_tokenizer = byte_level_transformers(), sentencepiece_transformers()
    target_lm = ReferenceLM(target_tokenizer, seed=TARGET_SEED, reference=CODE_REFERENCE)
    drafter_lm = ReferenceLM(drafter_tokenizer, seed=TARGET_SEED + 1, reference=CODE_REFERENCE)
    target = await start_toy(target_lm, tokenizer=target_tokenizer, eos_token_ids=[target_lm.eos])
    drafter = await start_toy(drafter_lm, tokenizer=drafter_tokenizer, eos_token_ids=[drafter_lm.eos])
    server = await start_coord(coordinator_settings(target.address, drafter.address))
    assert server.services.pair.cross_vocabulary and server.services.pair.tli_error == ""
