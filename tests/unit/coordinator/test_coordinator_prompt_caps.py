"""Bounded work per request: prompt byte and token caps, and tokenization off the event loop.

A prompt over the byte cap is refused before anything tokenizes it (INVALID_ARGUMENT naming the field,
its size and the cap) and without a model call; one over the token cap after tokenization, before any
model call. Tokenizing runs on the server's small pool: a request whose prompt takes long to tokenize
does not hold up another.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from polyspec.v1 import coordinator_pb2

import coordinator.loop.plan as plan_module
import coordinator.request as request_module
from coordinator.pair import ModelEndpoint
from coordinator.prompting import encode_target_prompt
from coordinator.request import PromptInput, TextInput
from coordinator.server import CoordinatorServer
from tests.support.toy_service import ToyServer
from tests.unit.coordinator.conftest import coordinator_settings

StartToy = Callable[..., Awaitable[ToyServer]]
StartCoord = Callable[..., Awaitable[CoordinatorServer]]

CHAT = coordinator_pb2.Chat(
    messages=[coordinator_pb2.ChatMessage(role="user", content="alpha beta")]  # 4 + 10 bytes
)
FIM = coordinator_pb2.FillInTheMiddle(prefix="alpha ", suffix="beta")  # 6 + 4 bytes


def request(**input_: Any) -> coordinator_pb2.GenerateRequest:
    return coordinator_pb2.GenerateRequest(max_new_tokens=2, ignore_eos=True, **input_)


@pytest.fixture
def encoded(monkeypatch: pytest.MonkeyPatch) -> list[PromptInput]:
    """Every prompt the coordinator tokenizes for the target."""
    seen: list[PromptInput] = []

    def recording(target: ModelEndpoint, prompt: PromptInput) -> list[int]:
        seen.append(prompt)
        return encode_target_prompt(target, prompt)

    monkeypatch.setattr(plan_module, "encode_target_prompt", recording)
    return seen


# (field, a request at the byte cap, one a byte over it)
CapCase = tuple[str, coordinator_pb2.GenerateRequest, coordinator_pb2.GenerateRequest]


@pytest.mark.parametrize(
    "case",
    [
        ("prompt", request(prompt="alpha beta"), request(prompt="alpha beta ")),
        (
            "chat.messages",
            request(chat=CHAT),
            request(chat=coordinator_pb2.Chat(messages=[*CHAT.messages] * 2)),
        ),
        (
            "fim",
            request(fim=FIM),
            request(fim=coordinator_pb2.FillInTheMiddle(prefix="alpha ", suffix="beta ")),
        ),
    ],
)
async def test_byte_cap_refuses_before_tokenizing(
    start_toy: StartToy,
    start_coord: StartCoord,
    channels: Any,
    encoded: list[PromptInput],
    case: CapCase,
) -> None:
    field, at_cap, over_cap = case
    cap = 14 if field == "chat.messages" else 10
    target = await start_toy()
    server = await start_coord(coordinator_settings(target.address, max_prompt_bytes=cap))
    stub = channels(server.port)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(over_cap)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(info.value.details()).startswith(f"{field}: is "), info.value.details()
    assert f"at most {cap}" in str(info.value.details())
    assert encoded == [] and target.state.calls == []
    response = await stub.Generate(at_cap)
    assert len(response.token_ids) == 2 and len(encoded) == 1


async def test_a_huge_prompt_is_refused_fast(
    start_toy: StartToy, start_coord: StartCoord, channels: Any, encoded: list[PromptInput]
) -> None:
    target = await start_toy()
    server = await start_coord(coordinator_settings(target.address))  # the default cap: 1 MiB
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await channels(server.port).Generate(request(prompt="alpha " * 2_000_000))  # 12 MB
    assert time.monotonic() - started < 5.0
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (
        str(info.value.details())
        == "prompt: is 12000000 bytes (UTF-8); this coordinator takes at most 1048576"
    )
    assert encoded == [] and target.state.calls == []


async def test_token_cap_refuses_before_any_model_call(
    start_toy: StartToy, start_coord: StartCoord, channels: Any
) -> None:
    target = await start_toy()
    server = await start_coord(coordinator_settings(target.address, max_prompt_tokens=3))
    stub = channels(server.port)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Generate(request(prompt="alpha beta alpha"))  # <bos> + 3 words
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(info.value.details()) == "prompt: is 4 tokens long; this coordinator takes at most 3"
    assert target.state.calls == []
    response = await stub.Generate(request(prompt="alpha beta"))
    assert response.stats.prompt_tokens == 3


async def test_tokenizing_does_not_block_other_requests(
    start_toy: StartToy, start_coord: StartCoord, channels: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = threading.Event()
    blocked_threads: list[str] = []

    def slow(target: ModelEndpoint, prompt: PromptInput) -> list[int]:
        if isinstance(prompt, TextInput) and prompt.text.startswith("beta"):
            blocked_threads.append(threading.current_thread().name)
            release.wait(timeout=10.0)  # a tokenizer busy on a large prompt
        return encode_target_prompt(target, prompt)

    monkeypatch.setattr(plan_module, "encode_target_prompt", slow)
    target = await start_toy()
    server = await start_coord(coordinator_settings(target.address))
    stub = channels(server.port)
    slow_call = asyncio.ensure_future(stub.Generate(request(prompt="beta alpha")))
    while not blocked_threads:
        await asyncio.sleep(0.01)
    try:
        quick = await asyncio.wait_for(stub.Generate(request(prompt="alpha beta")), timeout=5.0)
        assert len(quick.token_ids) == 2 and not slow_call.done()
    finally:
        release.set()
    assert len((await slow_call).token_ids) == 2
    assert blocked_threads[0] != threading.main_thread().name


@pytest.mark.parametrize("chunk", [1 << 20, 7])
def test_the_byte_size_is_the_utf8_size_without_a_copy(monkeypatch: pytest.MonkeyPatch, chunk: int) -> None:
    monkeypatch.setattr(request_module, "_SIZE_CHUNK_CHARS", chunk)
    for text in ("", "alpha beta", "é" * 11, "a\U0001f600b" * 9 + "\u4e00", "\ud800 lone surrogate"):
        expected = len(text.encode("utf-8", errors="surrogatepass"))
        assert request_module.prompt_bytes(TextInput(text)) == expected
