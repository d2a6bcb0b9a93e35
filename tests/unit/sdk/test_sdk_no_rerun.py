"""The SDK never silently re-runs a generation the coordinator had started; bearer tokens; typed range errors.

A coordinator sends ``polyspec-accepted`` as its handler starts; a failure after that header (or after a
stream's first message) is raised, never retried. The scripted coordinator plays both kinds of failure.
"""

from __future__ import annotations

import grpc
import pytest
from polyspec import AsyncClient, Client, InvalidArgumentError, UnauthenticatedError, UnavailableError
from polyspec.convert import build_request, parse_lookahead
from polyspec.retry import ACCEPTED_HEADER

from core.serving.interceptor import ACCEPTED_METADATA
from tests.unit.sdk.scripted_coordinator import Reply, ScriptedServer, sample_response, sample_stream


class Sleeps:
    def __init__(self) -> None:
        self.seconds: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)

    async def asleep(self, seconds: float) -> None:
        self.seconds.append(seconds)


def cut(accepted: bool) -> Reply:
    """A call that fails with UNAVAILABLE, after the handler took it (accepted) or before."""
    return Reply(code=grpc.StatusCode.UNAVAILABLE, message="max connection age", accepted=accepted)


def test_the_sdk_reads_the_header_the_servers_send() -> None:
    assert ACCEPTED_METADATA[0] == ACCEPTED_HEADER


def test_a_unary_call_cut_after_acceptance_is_raised_not_rerun(scripted: ScriptedServer) -> None:
    scripted.script(cut(accepted=True), Reply(response=sample_response()))
    sleeps = Sleeps()
    with Client(scripted.address, sleep=sleeps, max_retries=3) as client, pytest.raises(UnavailableError):
        client.generate("p", max_new_tokens=4096)
    assert len(scripted.seen) == 1 and sleeps.seconds == []


def test_a_unary_call_refused_before_acceptance_is_retried(scripted: ScriptedServer) -> None:
    scripted.script(cut(accepted=False), Reply(response=sample_response()))
    sleeps = Sleeps()
    with Client(scripted.address, sleep=sleeps) as client:
        assert client.generate("p").text == "hello world"
    assert len(scripted.seen) == 2 and len(sleeps.seconds) == 1


def test_a_stream_is_never_rerun_once_accepted_or_once_tokens_came(scripted: ScriptedServer) -> None:
    scripted.script(
        cut(accepted=True),  # accepted, nothing received yet: still not re-run
        Reply(stream=sample_stream()[:1], code=grpc.StatusCode.UNAVAILABLE, message="cut", accepted=True),
        Reply(stream=sample_stream()),
    )
    sleeps = Sleeps()
    with Client(scripted.address, sleep=sleeps) as client:
        with pytest.raises(UnavailableError):
            client.generate_stream("p").collect()
        received = []
        with pytest.raises(UnavailableError, match="cut"):
            for delta in client.generate_stream("p"):
                received.append(delta)
    assert received == ["def"]
    assert len(scripted.seen) == 2 and sleeps.seconds == []


async def test_the_async_client_follows_the_same_rule(scripted: ScriptedServer) -> None:
    scripted.script(cut(accepted=True), cut(accepted=False), Reply(response=sample_response()))
    sleeps = Sleeps()
    async with AsyncClient(scripted.address, sleep=sleeps.asleep) as client:
        with pytest.raises(UnavailableError):
            await client.generate("p")
        assert (await client.generate("p")).text == "hello world"
        scripted.script(cut(accepted=True), Reply(stream=sample_stream()))
        with pytest.raises(UnavailableError):
            await client.generate_stream("p").collect()
    assert len(scripted.seen) == 4 and len(sleeps.seconds) == 1


def test_the_bearer_token_goes_with_every_call(scripted: ScriptedServer) -> None:
    scripted.script(Reply(response=sample_response()), Reply(stream=sample_stream()))
    with Client(scripted.address, bearer_token="t0ken") as client:
        client.generate("p")
        client.generate_stream("p").collect()
    assert [seen.metadata.get("authorization") for seen in scripted.seen] == ["Bearer t0ken"] * 2


async def test_the_async_client_sends_the_token_too(scripted: ScriptedServer) -> None:
    scripted.script(Reply(response=sample_response()), Reply(stream=sample_stream()))
    async with AsyncClient(scripted.address, bearer_token="t0ken") as client:
        await client.generate("p")
        await client.generate_stream("p").collect()
    assert [seen.metadata.get("authorization") for seen in scripted.seen] == ["Bearer t0ken"] * 2


def test_no_token_no_header(scripted: ScriptedServer) -> None:
    scripted.script(Reply(response=sample_response()))
    with Client(scripted.address) as client:
        client.generate("p")
    assert "authorization" not in scripted.seen[0].metadata


@pytest.mark.parametrize("token", ["", "two words", "line\nbreak", "caf\u00e9"])
def test_unusable_tokens_fail_locally(token: str) -> None:
    with pytest.raises(InvalidArgumentError, match="bearer_token"):
        Client("127.0.0.1:1", bearer_token=token)


def test_unauthenticated_is_typed_and_not_retried(scripted: ScriptedServer) -> None:
    scripted.script(Reply(code=grpc.StatusCode.UNAUTHENTICATED, message="requires a bearer token"))
    with Client(scripted.address) as client, pytest.raises(UnauthenticatedError, match="bearer token"):
        client.generate("p")
    assert len(scripted.seen) == 1


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"max_new_tokens": 2**31}, "max_new_tokens"),
        ({"max_new_tokens": 1.5}, "max_new_tokens"),
        ({"max_new_tokens": True}, "max_new_tokens"),
        ({"top_k": 2**40}, "top_k"),
        ({"top_k": -(2**31) - 1}, "top_k"),
        ({"lookahead": 2**31}, "lookahead.k"),
        ({"lookahead": "confidence:99999999999"}, "lookahead.k"),
        ({"lookahead_k": 2**31}, "lookahead_k"),
        ({"seed": 2**64}, "seed"),
        ({"seed": -1}, "seed"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": [0.5]}, "top_p"),
        ({"confidence_threshold": "high", "lookahead": "confidence"}, "confidence_threshold"),
        ({"request_id": 7}, "request_id"),
    ],
)
def test_values_the_wire_cannot_carry_are_typed_errors(options: dict[str, object], field: str) -> None:
    arguments: dict[str, object] = {"max_new_tokens": 8, **options}
    with pytest.raises(InvalidArgumentError, match=rf"^INVALID_ARGUMENT: {field}: ") as info:
        build_request(prompt="p", **arguments)  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError)  # still a ValueError for existing callers


def test_wire_range_limits_are_inclusive() -> None:
    request = build_request(prompt="p", max_new_tokens=2**31 - 1, top_k=2**31 - 1, seed=2**64 - 1)
    assert (request.max_new_tokens, request.sampling.top_k, request.seed) == (2**31 - 1, 2**31 - 1, 2**64 - 1)
    assert parse_lookahead(2**31 - 1).k == 2**31 - 1


def test_client_side_errors_reach_the_caller_before_any_call(scripted: ScriptedServer) -> None:
    with Client(scripted.address) as client, pytest.raises(InvalidArgumentError, match="max_new_tokens"):
        client.generate("p", max_new_tokens=2**40)
    assert scripted.seen == []
