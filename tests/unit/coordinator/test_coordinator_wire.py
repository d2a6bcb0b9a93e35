"""GenerateRequest -> domain parameters: defaults, and every bad field named in INVALID_ARGUMENT."""

from __future__ import annotations

import math
from typing import Any

import pytest
from polyspec.v1 import common_pb2, coordinator_pb2

from coordinator.config import CoordinatorSettings
from coordinator.request import AlgorithmName, LookaheadKind, RequestStats, SchedulerName, TextInput
from coordinator.wire import params_from_proto, stats_message
from core.errors import InvalidArgumentError

SETTINGS = CoordinatorSettings(target_addresses=("127.0.0.1:1",), max_new_tokens_cap=100, max_lookahead_k=8)


def request(**fields: Any) -> coordinator_pb2.GenerateRequest:
    fields.setdefault("prompt", "hello")
    fields.setdefault("max_new_tokens", 4)
    return coordinator_pb2.GenerateRequest(**fields)


def test_defaults() -> None:
    params = params_from_proto(request(), SETTINGS)
    assert params.input == TextInput("hello")
    assert params.sampling.temperature == 1.0 and params.sampling.top_p == 1.0 and params.sampling.top_k == 0
    assert params.seed is None
    assert params.algorithm is AlgorithmName.AUTO
    assert params.lookahead.kind is LookaheadKind.AUTO
    assert params.lookahead.k is None and params.lookahead.confidence_threshold is None
    assert params.request_id  # made up when empty
    assert params.scheduler is None  # the coordinator's default


def test_explicit_values() -> None:
    params = params_from_proto(
        request(
            seed=0,
            sampling=common_pb2.SamplingParams(temperature=0.0, top_k=3, top_p=0.5),
            algorithm=common_pb2.ALGORITHM_SD,
            lookahead=coordinator_pb2.Lookahead(
                policy=coordinator_pb2.LOOKAHEAD_POLICY_CONFIDENCE, k=8, confidence_threshold=0.25
            ),
            request_id="abc",
            ignore_eos=True,
            scheduler=coordinator_pb2.SCHEDULER_DSI,
        ),
        SETTINGS,
    )
    assert params.seed == 0
    assert params.sampling.is_greedy and params.sampling.top_k == 3
    assert params.algorithm is AlgorithmName.SD
    assert params.lookahead.k == 8 and params.lookahead.confidence_threshold == 0.25
    assert params.request_id == "abc" and params.ignore_eos
    assert params.scheduler is SchedulerName.DSI


@pytest.mark.parametrize(
    ("value", "expected"),
    [(coordinator_pb2.SCHEDULER_SI, SchedulerName.SI), (coordinator_pb2.SCHEDULER_AUTO, SchedulerName.AUTO)],
)
def test_scheduler_values(value: coordinator_pb2.Scheduler.ValueType, expected: SchedulerName) -> None:
    assert params_from_proto(request(scheduler=value), SETTINGS).scheduler is expected


def test_dsi_statistics_reach_the_wire() -> None:
    stats = RequestStats(
        algorithm=AlgorithmName.SD,
        lookahead="static:4",
        prompt_tokens=3,
        output_tokens=8,
        draft_tokens=8,
        accepted_tokens=6,
        target_forwards=3,
        drafter_forwards=8,
        rounds=3,
        time_to_first_token_seconds=0.1,
        total_seconds=1.0,
        bytes_sent=10,
        bytes_received=20,
        emulated_latency=False,
        fallback_reason="",
        seed=1,
        scheduler=SchedulerName.DSI,
        target_replicas_used=2,
        verifications_preempted=3,
        target_tokens_computed=20,
        call_queue_seconds=0.25,
        drafter_compute_seconds=0.5,
        target_compute_seconds=1.5,
        drafter_call_seconds=0.75,
        target_call_seconds=2.25,
    )
    message = stats_message(stats)
    assert (message.drafter_compute_seconds, message.target_compute_seconds) == (0.5, 1.5)
    assert (message.drafter_call_seconds, message.target_call_seconds) == (0.75, 2.25)
    assert message.scheduler == coordinator_pb2.SCHEDULER_DSI
    assert (message.target_replicas_used, message.verifications_preempted) == (2, 3)
    assert message.target_tokens_per_output_token == 2.5 and message.call_queue_seconds == 0.25


def _chat(*messages: tuple[str, str]) -> coordinator_pb2.Chat:
    return coordinator_pb2.Chat(
        messages=[coordinator_pb2.ChatMessage(role=r, content=c) for r, c in messages]
    )


BAD_REQUESTS: list[tuple[str, coordinator_pb2.GenerateRequest]] = [
    ("input", coordinator_pb2.GenerateRequest(max_new_tokens=4)),
    ("prompt", request(prompt="")),
    ("chat.messages", coordinator_pb2.GenerateRequest(chat=_chat(), max_new_tokens=4)),
    (
        "chat.messages[1].role",
        coordinator_pb2.GenerateRequest(chat=_chat(("user", "x"), ("", "y")), max_new_tokens=4),
    ),
    ("max_new_tokens", request(max_new_tokens=0)),
    ("max_new_tokens", request(max_new_tokens=-3)),
    ("max_new_tokens", request(max_new_tokens=101)),
    ("sampling.temperature", request(sampling=common_pb2.SamplingParams(temperature=-0.5))),
    ("sampling.temperature", request(sampling=common_pb2.SamplingParams(temperature=math.nan))),
    ("sampling.temperature", request(sampling=common_pb2.SamplingParams(temperature=math.inf))),
    ("sampling.top_p", request(sampling=common_pb2.SamplingParams(top_p=0.0))),
    ("sampling.top_p", request(sampling=common_pb2.SamplingParams(top_p=1.5))),
    ("sampling.top_p", request(sampling=common_pb2.SamplingParams(top_p=math.nan))),
    ("sampling.top_k", request(sampling=common_pb2.SamplingParams(top_k=-1))),
    ("lookahead.k", request(lookahead=coordinator_pb2.Lookahead(k=9))),
    ("lookahead.k", request(lookahead=coordinator_pb2.Lookahead(k=-1))),
    (
        "lookahead.confidence_threshold",
        request(lookahead=coordinator_pb2.Lookahead(confidence_threshold=1.0)),
    ),
    (
        "lookahead.confidence_threshold",
        request(lookahead=coordinator_pb2.Lookahead(confidence_threshold=-0.1)),
    ),
    (
        "lookahead.confidence_threshold",
        request(lookahead=coordinator_pb2.Lookahead(confidence_threshold=math.nan)),
    ),
    ("algorithm", request(algorithm=42)),  # type: ignore[arg-type]
    ("scheduler", request(scheduler=7)),  # type: ignore[arg-type]
    ("lookahead.policy", request(lookahead=coordinator_pb2.Lookahead(policy=17))),  # type: ignore[arg-type]
    ("request_id", request(request_id="x" * 200)),
]


@pytest.mark.parametrize(
    ("field", "bad"), BAD_REQUESTS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD_REQUESTS)]
)
def test_bad_fields_are_named(field: str, bad: coordinator_pb2.GenerateRequest) -> None:
    with pytest.raises(InvalidArgumentError) as info:
        params_from_proto(bad, SETTINGS)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
