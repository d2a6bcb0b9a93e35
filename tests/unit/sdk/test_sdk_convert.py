"""Conversion between SDK types and polyspec.v1 messages, lookahead parsing and error mapping."""

from __future__ import annotations

import dataclasses

import grpc
import polyspec
import pytest
from polyspec import GenerationStats, InvalidArgumentError, Lookahead, parse_lookahead
from polyspec.convert import (
    StreamAssembler,
    algorithm_name,
    build_request,
    result_from_proto,
    scheduler_name,
)
from polyspec.errors import error_for_status
from polyspec.v1 import common_pb2, coordinator_pb2

from tests.unit.sdk.scripted_coordinator import sample_response, sample_stats, sample_stream


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, Lookahead("auto", 0, 0.0)),
        (5, Lookahead("static", 5, 0.0)),
        ("5", Lookahead("static", 5, 0.0)),
        ("static:7", Lookahead("static", 7, 0.0)),
        ("auto", Lookahead("auto", 0, 0.0)),
        ("confidence", Lookahead("confidence", 0, 0.0)),
        ("confidence:8:0.4", Lookahead("confidence", 8, 0.4)),
        ("Confidence::0.3", Lookahead("confidence", 0, 0.3)),
        ("disco:6", Lookahead("disco", 6, 0.0)),
        (Lookahead("static", 3), Lookahead("static", 3, 0.0)),
    ],
)
def test_parse_lookahead(spec: str | int | Lookahead | None, expected: Lookahead) -> None:
    assert parse_lookahead(spec) == expected


def test_parse_lookahead_keyword_completion() -> None:
    assert parse_lookahead("confidence", k=8, confidence_threshold=0.5) == Lookahead("confidence", 8, 0.5)
    assert parse_lookahead("static:4", k=4) == Lookahead("static", 4, 0.0)


@pytest.mark.parametrize(
    ("spec", "kwargs", "message"),
    [
        ("fast", {}, "expected K, POLICY"),
        ("static:x", {}, "k must be an integer"),
        ("static:-1", {}, "expected K, POLICY|k must be >= 0"),
        (0, {}, "k must be >= 1"),
        (True, {}, "expected an int"),
        ("static:0.5:1:2", {}, "expected K, POLICY"),
        ("static", {"confidence_threshold": 0.3}, "applies to the confidence policy"),
        ("confidence:4:1.5", {}, r"threshold must lie in \[0, 1\)"),
        ("static:4", {"k": 5}, "k given twice"),
    ],
)
def test_parse_lookahead_rejects(spec: object, kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message) as info:
        parse_lookahead(spec, **kwargs)  # type: ignore[arg-type]
    assert info.value.message.startswith("lookahead: ")
    assert isinstance(info.value, ValueError)


def test_stats_carry_every_proto_field() -> None:
    proto_fields = {f.name for f in coordinator_pb2.GenerationStats.DESCRIPTOR.fields}
    assert proto_fields == {f.name for f in dataclasses.fields(GenerationStats)}
    stats = result_from_proto(sample_response()).stats
    proto = sample_stats()
    for name in proto_fields - {"algorithm", "scheduler", "near_tie_positions"}:
        assert getattr(stats, name) == pytest.approx(getattr(proto, name)), name
    assert stats.algorithm == "tli" and stats.scheduler == "dsi" and stats.near_tie_positions == (3, 7)


@pytest.mark.parametrize("name", polyspec.SCHEDULERS)
def test_scheduler_names_round_trip(name: str) -> None:
    request = build_request(prompt="x", max_new_tokens=1, scheduler=name)
    assert scheduler_name(request.scheduler) == name


def test_an_unset_scheduler_leaves_the_choice_to_the_coordinator() -> None:
    assert build_request(prompt="x", max_new_tokens=1).scheduler == coordinator_pb2.SCHEDULER_UNSPECIFIED
    response = sample_response()
    response.stats.ClearField("scheduler")  # an older coordinator: it ran SI
    assert result_from_proto(response).stats.scheduler == "si"
    response.stats.scheduler = 9  # type: ignore[assignment]
    assert result_from_proto(response).stats.scheduler == "unknown(9)"


@pytest.mark.parametrize("bad", ["fast", "DSI", 1, ""])
def test_a_bad_scheduler_is_refused_before_the_call(bad: object) -> None:
    with pytest.raises(InvalidArgumentError, match=r"scheduler: must be one of si, dsi, auto or None"):
        build_request(prompt="x", max_new_tokens=1, scheduler=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", polyspec.ALGORITHMS)
def test_algorithm_names_round_trip(name: str) -> None:
    request = build_request(prompt="x", max_new_tokens=1, algorithm=name)
    assert algorithm_name(request.algorithm) == name


def test_unknown_enum_values_from_a_newer_server_do_not_break_conversion() -> None:
    response = sample_response()
    response.stats.algorithm = 99  # type: ignore[assignment]
    response.finish_reason = 42  # type: ignore[assignment]
    result = result_from_proto(response)
    assert result.stats.algorithm == "unknown(99)" and result.finish_reason == "unspecified"


def test_chat_inputs_are_validated() -> None:
    request = build_request(chat=[polyspec.ChatMessage("system", "be brief")], max_new_tokens=1)
    assert request.chat.messages[0].role == "system"
    with pytest.raises(InvalidArgumentError, match=r"chat\[1\]"):
        build_request(chat=[("user", "a"), {"role": "user"}], max_new_tokens=1)
    with pytest.raises(InvalidArgumentError, match="chat: must be a sequence"):
        build_request(chat="hello", max_new_tokens=1)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="fim"):
        build_request(fim=("only prefix",), max_new_tokens=1)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="got none"):
        build_request(max_new_tokens=1)


def test_an_empty_prompt_is_still_a_prompt() -> None:
    assert build_request(prompt="", max_new_tokens=1).WhichOneof("input") == "prompt"


def test_stream_assembler_rejects_messages_after_the_final_one() -> None:
    assembler = StreamAssembler()
    messages = sample_stream()
    assert [assembler.add(m) for m in messages] == ["def", " f", "(x)"]
    assert assembler.result().stats.algorithm == "sd"
    with pytest.raises(polyspec.InternalError):
        assembler.add(messages[0])


@pytest.mark.parametrize(
    ("code", "error_type"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, polyspec.InvalidArgumentError),
        (grpc.StatusCode.FAILED_PRECONDITION, polyspec.FailedPreconditionError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, polyspec.ResourceExhaustedError),
        (grpc.StatusCode.UNAVAILABLE, polyspec.UnavailableError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, polyspec.DeadlineExceededError),
        (grpc.StatusCode.NOT_FOUND, polyspec.NotFoundError),
        (grpc.StatusCode.CANCELLED, polyspec.RequestCancelledError),
        (grpc.StatusCode.UNIMPLEMENTED, polyspec.UnimplementedError),
        (grpc.StatusCode.INTERNAL, polyspec.InternalError),
        (grpc.StatusCode.PERMISSION_DENIED, polyspec.PolyspecError),
    ],
)
def test_error_for_status(code: grpc.StatusCode, error_type: type[polyspec.PolyspecError]) -> None:
    error = error_for_status(code, "why")
    assert type(error) is error_type
    assert error.code == code and error.message == "why" and error.code_name == code.name


def test_sampling_fields_default_to_unset() -> None:
    request = build_request(prompt="x", max_new_tokens=3, temperature=0.7)
    assert request.sampling == common_pb2.SamplingParams(temperature=0.7)
