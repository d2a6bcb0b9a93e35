"""The blocking client against a scripted coordinator: requests, retries, deadlines, errors, streams."""

from __future__ import annotations

import random

import grpc
import pytest
from polyspec import (
    Client,
    DeadlineExceededError,
    GenerationResult,
    InternalError,
    InvalidArgumentError,
    ResourceExhaustedError,
    RetryPolicy,
    UnavailableError,
)
from polyspec.v1 import common_pb2, coordinator_pb2

from tests.unit.sdk.scripted_coordinator import Reply, ScriptedServer, sample_response, sample_stream


class TopOfRange(random.Random):
    """Always draws the top of the backoff range, so a test knows each delay exactly."""

    def uniform(self, a: float, b: float) -> float:
        return b


class FakeClock:
    """A monotonic clock that moves only when the client sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def unavailable() -> Reply:
    return Reply(code=grpc.StatusCode.UNAVAILABLE, message="coordinator: draining")


def test_generate_sends_the_options_and_converts_the_result(scripted: ScriptedServer) -> None:
    scripted.script(Reply(response=sample_response()))
    with Client(scripted.address) as client:
        result = client.generate(
            "def f(x):",
            max_new_tokens=17,
            temperature=0.0,
            top_k=40,
            top_p=0.9,
            seed=2**64 - 1,
            algorithm="slem",
            lookahead="confidence:8:0.25",
            ignore_eos=True,
            request_id="mine",
        )
    request = scripted.seen[0].request
    assert request.WhichOneof("input") == "prompt" and request.prompt == "def f(x):"
    assert request.max_new_tokens == 17
    assert request.sampling.HasField("temperature") and request.sampling.temperature == 0.0
    assert request.sampling.top_k == 40 and request.sampling.top_p == pytest.approx(0.9)
    assert request.seed == 2**64 - 1
    assert request.algorithm == common_pb2.ALGORITHM_SLEM
    assert request.lookahead.policy == coordinator_pb2.LOOKAHEAD_POLICY_CONFIDENCE
    assert request.lookahead.k == 8 and request.lookahead.confidence_threshold == pytest.approx(0.25)
    assert request.ignore_eos and request.request_id == "mine"
    assert isinstance(result, GenerationResult)
    assert (result.text, result.token_ids, result.finish_reason) == ("hello world", (5, 6, 7), "stop")
    assert result.stats.algorithm == "tli" and result.stats.seed == 2**63 + 5
    assert result.request_id == "req-1"


def test_unset_options_stay_unset_on_the_wire(scripted: ScriptedServer) -> None:
    scripted.script(Reply(response=sample_response()))
    with Client(scripted.address) as client:
        client.generate(chat=[("user", "hi"), {"role": "assistant", "content": "yes"}])
    request = scripted.seen[0].request
    assert [(m.role, m.content) for m in request.chat.messages] == [("user", "hi"), ("assistant", "yes")]
    assert not request.sampling.HasField("temperature") and not request.sampling.HasField("top_p")
    assert not request.HasField("seed")
    assert request.algorithm == common_pb2.ALGORITHM_AUTO
    assert request.lookahead.policy == coordinator_pb2.LOOKAHEAD_POLICY_AUTO and request.lookahead.k == 0
    assert scripted.seen[0].time_remaining is None or scripted.seen[0].time_remaining > 1e6


def test_bad_options_fail_locally_without_a_call(scripted: ScriptedServer) -> None:
    with Client(scripted.address) as client:
        with pytest.raises(InvalidArgumentError, match="exactly one of prompt, chat, fim"):
            client.generate("a", fim=("b", "c"))
        with pytest.raises(InvalidArgumentError, match="algorithm: must be one of"):
            client.generate("a", algorithm="fast")
        with pytest.raises(InvalidArgumentError, match="seed"):
            client.generate("a", seed=-1)
    assert scripted.seen == []


def test_unavailable_is_retried_with_jittered_backoff_from_the_injected_rng(scripted: ScriptedServer) -> None:
    scripted.script(unavailable(), unavailable(), Reply(response=sample_response()))
    sleeps: list[float] = []
    policy = RetryPolicy(max_retries=3, initial_backoff_seconds=0.5, max_backoff_seconds=0.8)
    with Client(scripted.address, retry_policy=policy, rng=random.Random(7), sleep=sleeps.append) as client:
        result = client.generate("x")
    assert result.text == "hello world"
    assert len(scripted.seen) == 3
    expected_rng = random.Random(7)
    assert sleeps == [expected_rng.uniform(0, 0.5), expected_rng.uniform(0, 0.8)]


def test_retries_are_bounded(scripted: ScriptedServer) -> None:
    scripted.script(*[unavailable() for _ in range(5)])
    sleeps: list[float] = []
    client = Client(scripted.address, max_retries=2, rng=random.Random(0), sleep=sleeps.append)
    with client, pytest.raises(UnavailableError) as info:
        client.generate("x")
    assert len(scripted.seen) == 3 and len(sleeps) == 2
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert info.value.message == "coordinator: draining"


@pytest.mark.parametrize(
    ("code", "error_type"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgumentError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhaustedError),
        (grpc.StatusCode.INTERNAL, InternalError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceededError),
    ],
)
def test_other_codes_are_not_retried_and_keep_the_server_message(
    scripted: ScriptedServer, code: grpc.StatusCode, error_type: type[Exception]
) -> None:
    scripted.script(Reply(code=code, message="max_new_tokens: must be >= 1, got 0"), unavailable())
    sleeps: list[float] = []
    with Client(scripted.address, sleep=sleeps.append) as client, pytest.raises(error_type) as info:
        client.generate("x")
    assert len(scripted.seen) == 1 and sleeps == []
    assert str(info.value) == f"{code.name}: max_new_tokens: must be >= 1, got 0"


def test_timeout_becomes_the_grpc_deadline(scripted: ScriptedServer) -> None:
    scripted.script(Reply(block=True))
    with Client(scripted.address, timeout=30.0) as client, pytest.raises(DeadlineExceededError) as info:
        client.generate("x", timeout=0.3)
    remaining = scripted.seen[0].time_remaining
    assert remaining is not None and remaining <= 0.31  # the wire rounds timeouts up a little
    assert info.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert scripted.seen[0].ended.wait(10)  # the server saw the call end


def test_retries_spend_the_same_deadline(scripted: ScriptedServer) -> None:
    scripted.script(unavailable(), Reply(response=sample_response()))
    clock = FakeClock()
    policy = RetryPolicy(initial_backoff_seconds=4.0, max_backoff_seconds=4.0)
    with Client(
        scripted.address, timeout=10.0, retry_policy=policy, rng=TopOfRange(), sleep=clock.sleep, clock=clock
    ) as client:
        client.generate("x")
    assert clock.sleeps == [4.0]
    first, second = (seen.time_remaining for seen in scripted.seen)
    assert first is not None and second is not None
    # The second attempt gets what is left after the 4 s backoff (the wire rounds timeouts up a little).
    assert first <= 10.1 and second <= 6.1 and first - second >= 3.9


def test_a_retry_never_sleeps_past_the_deadline(scripted: ScriptedServer) -> None:
    scripted.script(unavailable(), Reply(response=sample_response()))
    clock = FakeClock()
    policy = RetryPolicy(initial_backoff_seconds=5.0, max_backoff_seconds=5.0)
    with (
        Client(
            scripted.address,
            timeout=5.0,
            retry_policy=policy,
            rng=TopOfRange(),
            sleep=clock.sleep,
            clock=clock,
        ) as client,
        pytest.raises(UnavailableError),
    ):
        client.generate("x")
    assert clock.sleeps == [] and len(scripted.seen) == 1


def test_stream_yields_deltas_then_exposes_the_result(scripted: ScriptedServer) -> None:
    scripted.script(Reply(stream=sample_stream(("def", "", " f", "(x)"))))
    with Client(scripted.address) as client:
        stream = client.generate_stream("p", max_new_tokens=4)
        with pytest.raises(RuntimeError, match="not finished"):
            _ = stream.result
        deltas = list(stream)
    assert deltas == ["def", " f", "(x)"]
    result = stream.result
    assert result.text == "def f(x)" and result.token_ids == (100, 101, 102, 103)
    assert result.finish_reason == "length" and result.stats.algorithm == "sd"
    assert result.request_id == "req-s"
    assert scripted.seen[0].request.max_new_tokens == 4


def test_stream_is_retried_only_before_the_first_message(scripted: ScriptedServer) -> None:
    scripted.script(unavailable(), Reply(stream=sample_stream()))
    sleeps: list[float] = []
    with Client(scripted.address, rng=random.Random(1), sleep=sleeps.append) as client:
        assert client.generate_stream("p").collect().text == "def f(x)"
    assert len(scripted.seen) == 2 and len(sleeps) == 1

    scripted.script(Reply(stream=sample_stream()[:1], code=grpc.StatusCode.UNAVAILABLE, message="gone"))
    with Client(scripted.address, sleep=sleeps.append) as client:
        received: list[str] = []
        with pytest.raises(UnavailableError, match="gone"):
            for delta in client.generate_stream("p"):
                received.append(delta)
    assert received == ["def"] and len(scripted.seen) == 3 and len(sleeps) == 1


def test_stream_without_its_final_message_is_an_error(scripted: ScriptedServer) -> None:
    messages = sample_stream()
    scripted.script(Reply(stream=messages[:-1]))
    client = Client(scripted.address)
    with client, pytest.raises(InternalError, match="without its final message"):
        client.generate_stream("p").collect()


def test_leaving_a_stream_early_cancels_the_call(scripted: ScriptedServer) -> None:
    scripted.script(Reply(stream=sample_stream()[:1], block=True))
    with Client(scripted.address) as client:
        with client.generate_stream("p") as stream:
            assert next(iter(stream)) == "def"
        # Cancelled by leaving the stream's block, while the channel stays open.
        assert scripted.seen[0].ended.wait(10)
