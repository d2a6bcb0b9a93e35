"""A prompt over the byte cap costs the coordinator a bounded amount of memory, and is refused fast.

The coordinator runs as its own process (``polyspec serve coordinator``) over a toy target served by
this test, so its memory is its own: /proc's ``VmHWM`` (peak resident set) is read before and after
prompts of 60 MB (under the 64 MiB message cap; before the byte cap, such a prompt drove a coordinator
to 19 GB while tokenizing it). Every one is refused with INVALID_ARGUMENT naming the prompt, and the peak
grows by a few copies of the message at most, not by a tokenization's hundreds of bytes per byte.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeAlias

import grpc
import pytest
from polyspec.v1 import coordinator_pb2, coordinator_pb2_grpc

from tests.support.toy_service import ToyServer
from tools.demo import LocalStack, wait_until_serving

StartToy = Callable[..., Awaitable[ToyServer]]
Stub: TypeAlias = "coordinator_pb2_grpc.CoordinatorServiceAsyncStub"  # type-check-only class
PROMPT_BYTES = 60_000_000
MiB = 1 << 20
# The peak may grow by a few copies of the message (gRPC's buffer, the parsed request, the prompt string
# and its UTF-8 size check), for two at once: far below what tokenizing it would take (many GB).
PEAK_GROWTH_LIMIT = 1024 * MiB

pytestmark = pytest.mark.slow


def _peak(pid: int) -> int:
    """The peak resident set of a process (``VmHWM``), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name == "VmHWM":
            return int(value.split()[0]) * 1024
    raise AssertionError(f"no VmHWM for process {pid}")


async def _refused(stub: Stub, prompt: str) -> grpc.aio.AioRpcError:
    request = coordinator_pb2.GenerateRequest(prompt=prompt, max_new_tokens=4)
    try:
        await stub.Generate(request, timeout=60)
    except grpc.aio.AioRpcError as error:
        return error
    raise AssertionError("a prompt over the byte cap was served")


async def _generate(stub: Stub) -> None:
    answer = await stub.Generate(coordinator_pb2.GenerateRequest(prompt="alpha beta", max_new_tokens=2))
    assert len(answer.token_ids) == 2


async def test_a_60_mb_prompt_keeps_the_coordinators_memory_bounded(
    start_toy: StartToy, tmp_path: Path
) -> None:
    target = await start_toy()
    prompt = "x = 1\n" * (PROMPT_BYTES // 6)
    options = [("grpc.max_send_message_length", 64 * MiB)]
    with LocalStack(tmp_path, log_level="WARNING") as stack:
        child = stack.start("coordinator", ["coordinator", "--target", target.address])
        address = await asyncio.to_thread(wait_until_serving, child, 120.0)
        async with grpc.aio.insecure_channel(address, options=options) as channel:
            stub: Stub = coordinator_pb2_grpc.CoordinatorServiceStub(channel)  # type: ignore[assignment]
            await _generate(stub)
            peak_before, calls_before = _peak(child.process.pid), len(target.state.calls)
            errors = [await _refused(stub, prompt) for _ in range(3)]
            errors += await asyncio.gather(_refused(stub, prompt), _refused(stub, prompt))
            peak_after, calls_after = _peak(child.process.pid), len(target.state.calls)
            await _generate(stub)  # still serving
    for error in errors:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert str(error.details()).startswith(f"prompt: is {PROMPT_BYTES} bytes (UTF-8)")
    assert calls_after == calls_before  # refused before any model call
    assert peak_after - peak_before < PEAK_GROWTH_LIMIT, (peak_before // MiB, peak_after // MiB)
