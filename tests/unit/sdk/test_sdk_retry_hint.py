"""The SDK waits a coordinator's retry hint: RESOURCE_EXHAUSTED with a ``google.rpc.RetryInfo``.

A refusal with a hint and without the acceptance header (the coordinator never ran the request) is
retried after the hinted delay, stretched by up to ``hint_jitter``; one with the header, one without a
hint, one whose hint would pass the deadline or is over ``max_hint_seconds`` is raised at once, with
the hint readable on the error. The hint is parsed without the googleapis protos (the SDK's own mirror).
"""

from __future__ import annotations

import random

import grpc
import pytest
from polyspec import AsyncClient, Client, ResourceExhaustedError, RetryPolicy
from polyspec.details import retry_delay_from_status

from coordinator.admission import AdmissionRefusedError
from core.serving.status import STATUS_DETAILS_KEY, status_for
from tests.unit.sdk.scripted_coordinator import Reply, ScriptedServer, sample_response, sample_stream

HINT = 2.0  # recorded, not slept: a deadline of HINT / 2 leaves a loaded machine time to answer


class Sleeps:
    def __init__(self) -> None:
        self.seconds: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)

    async def asleep(self, seconds: float) -> None:
        self.seconds.append(seconds)


def refused(hint: float | None = HINT, *, accepted: bool = False) -> Reply:
    return Reply(
        code=grpc.StatusCode.RESOURCE_EXHAUSTED, message="at capacity", retry_after=hint, accepted=accepted
    )


def test_the_sdk_reads_the_hint_the_coordinator_sends() -> None:
    status = status_for(AdmissionRefusedError(2, 2, 1.25))
    details = dict(status.trailing_metadata)[STATUS_DETAILS_KEY]
    assert isinstance(details, bytes)
    assert retry_delay_from_status(details) == pytest.approx(1.25)
    assert retry_delay_from_status(b"\xff\xff\xff") is None
    assert retry_delay_from_status(b"") is None


def test_a_refusal_with_a_hint_is_retried_after_the_hint(scripted: ScriptedServer) -> None:
    scripted.script(refused(), refused(), Reply(response=sample_response()))
    sleeps = Sleeps()
    with Client(scripted.address, sleep=sleeps, rng=random.Random(1), timeout=30) as client:
        assert client.generate("p").text == "hello world"
    assert len(scripted.seen) == 3 and len(sleeps.seconds) == 2
    for delay in sleeps.seconds:
        assert HINT <= delay <= HINT * 1.5
    assert len(set(sleeps.seconds)) == 2  # jittered


def test_a_stream_refused_with_a_hint_is_retried(scripted: ScriptedServer) -> None:
    scripted.script(refused(), Reply(stream=sample_stream()))
    sleeps = Sleeps()
    with Client(scripted.address, sleep=sleeps) as client:
        assert client.generate_stream("p").collect().text == "def f(x)"
    assert len(scripted.seen) == 2 and len(sleeps.seconds) == 1 and sleeps.seconds[0] >= HINT


def test_what_is_not_retried_is_raised_at_once_with_its_hint(scripted: ScriptedServer) -> None:
    sleeps = Sleeps()
    policy = RetryPolicy(max_retries=3, max_hint_seconds=5.0)
    with Client(scripted.address, sleep=sleeps, retry_policy=policy) as client:
        for reply, timeout, hint in (
            (refused(accepted=True), 30.0, HINT),  # the coordinator had started on it
            (refused(None), 30.0, None),  # no hint: a size cap, not a busy coordinator
            (refused(), HINT / 2, HINT),  # the hint would pass the deadline
            (refused(6.0), 30.0, 6.0),  # over max_hint_seconds
        ):
            scripted.script(reply, Reply(response=sample_response()))
            seen = len(scripted.seen)
            with pytest.raises(ResourceExhaustedError) as error:
                client.generate("p", timeout=timeout)
            assert error.value.retry_after_seconds == (None if hint is None else pytest.approx(hint))
            assert len(scripted.seen) == seen + 1
            scripted.servicer.replies.clear()
    assert sleeps.seconds == []


def test_retries_stop_at_max_retries(scripted: ScriptedServer) -> None:
    scripted.script(refused(), refused(), refused())
    sleeps = Sleeps()
    with (
        Client(scripted.address, sleep=sleeps, max_retries=2) as client,
        pytest.raises(ResourceExhaustedError),
    ):
        client.generate("p")
    assert len(scripted.seen) == 3 and len(sleeps.seconds) == 2


async def test_the_async_client_waits_the_hint_too(scripted: ScriptedServer) -> None:
    scripted.script(refused(), Reply(response=sample_response()), refused(), Reply(stream=sample_stream()))
    sleeps = Sleeps()
    async with AsyncClient(scripted.address, sleep=sleeps.asleep) as client:
        assert (await client.generate("p")).text == "hello world"
        assert (await client.generate_stream("p").collect()).text == "def f(x)"
        scripted.script(refused(accepted=True))
        with pytest.raises(ResourceExhaustedError):
            await client.generate("p")
    assert len(sleeps.seconds) == 2 and all(HINT <= s <= HINT * 1.5 for s in sleeps.seconds)
