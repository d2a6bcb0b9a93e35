"""A scripted stand-in for the coordinator *server*, to test the client's own logic on loopback.

Each call pops the next ``Reply``: a response (or stream messages), optionally followed by an abort
with a status code, or a block until the call is cancelled or its deadline passes. ``accepted`` first
sends the header a real coordinator sends once its handler took the request (``polyspec-accepted``);
``retry_after`` puts a retry hint (``google.rpc.RetryInfo``) in the abort's status details, built by the
server's own ``core.serving.status``.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from polyspec.v1 import common_pb2, coordinator_pb2, coordinator_pb2_grpc

from core.errors import ResourceExhaustedError
from core.serving.status import status_for

BLOCK_LIMIT_SECONDS = 30.0
# An accepted call that fails gives its headers this long to leave before the status: a status sent right
# behind them can overtake them on this synchronous test server, and the client then never sees them.
HEADER_FLUSH_SECONDS = 0.05
ACCEPTED = (("polyspec-accepted", "1"),)


@dataclass
class Reply:
    response: coordinator_pb2.GenerateResponse | None = None
    stream: Sequence[coordinator_pb2.GenerateStreamResponse] = ()
    code: grpc.StatusCode | None = None
    message: str = ""
    block: bool = False
    accepted: bool = False
    retry_after: float | None = None


@dataclass
class Seen:
    """What the server saw of one call."""

    request: coordinator_pb2.GenerateRequest
    time_remaining: float | None
    metadata: dict[str, str] = field(default_factory=dict)
    ended: threading.Event = field(default_factory=threading.Event)


class ScriptedCoordinator(coordinator_pb2_grpc.CoordinatorServiceServicer):
    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.seen: list[Seen] = []

    def _next(self, request: coordinator_pb2.GenerateRequest, context: Any) -> tuple[Reply, Seen]:
        metadata = {key: value for key, value in context.invocation_metadata() if isinstance(value, str)}
        seen = Seen(request, context.time_remaining(), metadata)
        context.add_callback(seen.ended.set)
        self.seen.append(seen)
        if not self.replies:
            context.abort(grpc.StatusCode.INTERNAL, "test script exhausted")
        reply = self.replies.popleft()
        if reply.accepted:
            context.send_initial_metadata(ACCEPTED)
            if reply.code is not None:
                seen.ended.wait(HEADER_FLUSH_SECONDS)
        return reply, seen

    def Generate(  # noqa: N802 - gRPC method name
        self, request: coordinator_pb2.GenerateRequest, context: Any
    ) -> coordinator_pb2.GenerateResponse:
        reply, seen = self._next(request, context)
        if reply.block:
            seen.ended.wait(BLOCK_LIMIT_SECONDS)
        if reply.code is not None:
            _abort(reply, context)
        assert reply.response is not None
        return reply.response

    def GenerateStream(  # noqa: N802 - gRPC method name
        self, request: coordinator_pb2.GenerateStreamRequest, context: Any
    ) -> Iterator[coordinator_pb2.GenerateStreamResponse]:
        reply, seen = self._next(request.request, context)
        yield from reply.stream
        if reply.block:
            seen.ended.wait(BLOCK_LIMIT_SECONDS)
        if reply.code is not None:
            _abort(reply, context)


def _abort(reply: Reply, context: Any) -> None:
    """Ends the call with the reply's status (and its retry hint in the status details)."""
    assert reply.code is not None
    if reply.retry_after is not None:
        status = status_for(ResourceExhaustedError(reply.message, retry_after_seconds=reply.retry_after))
        context.set_trailing_metadata(status.trailing_metadata)
    context.abort(reply.code, reply.message)


class ScriptedServer:
    """The scripted servicer on 127.0.0.1, port 0."""

    def __init__(self) -> None:
        self.servicer = ScriptedCoordinator()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        coordinator_pb2_grpc.add_CoordinatorServiceServicer_to_server(self.servicer, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{self.port}"
        self._server.start()

    def script(self, *replies: Reply) -> None:
        self.servicer.replies.extend(replies)

    @property
    def seen(self) -> list[Seen]:
        return self.servicer.seen

    def stop(self) -> None:
        self._server.stop(grace=None).wait()


def sample_stats(**overrides: Any) -> coordinator_pb2.GenerationStats:
    """Stats with every field set to a distinct value."""
    values: dict[str, Any] = {
        "algorithm": common_pb2.ALGORITHM_TLI,
        "lookahead": "confidence:5:0.40",
        "prompt_tokens": 11,
        "output_tokens": 12,
        "draft_tokens": 13,
        "accepted_tokens": 9,
        "acceptance_rate": 9 / 13,
        "target_forwards": 4,
        "drafter_forwards": 15,
        "rounds": 4,
        "time_to_first_token_seconds": 0.25,
        "total_seconds": 1.5,
        "tokens_per_second": 8.0,
        "bytes_sent": 1234,
        "bytes_received": 5678,
        "emulated_latency": True,
        "fallback_reason": "none really",
        "seed": 2**63 + 5,
        "near_tie_positions": [3, 7],
        "drafter_dtype": "float32+int8-dynamic",
        "target_dtype": "bfloat16",
        "scheduler": coordinator_pb2.SCHEDULER_DSI,
        "target_replicas_used": 3,
        "verifications_preempted": 2,
        "target_tokens_per_output_token": 2.5,
        "call_queue_seconds": 0.125,
        "drafter_compute_seconds": 0.5,
        "target_compute_seconds": 1.5,
        "drafter_call_seconds": 0.75,
        "target_call_seconds": 2.25,
    }
    values.update(overrides)
    return coordinator_pb2.GenerationStats(**values)


def sample_response(text: str = "hello world") -> coordinator_pb2.GenerateResponse:
    return coordinator_pb2.GenerateResponse(
        text=text,
        token_ids=[5, 6, 7],
        finish_reason=coordinator_pb2.FINISH_REASON_STOP,
        stats=sample_stats(),
        request_id="req-1",
    )


def sample_stream(
    deltas: Sequence[str] = ("def", " f", "(x)"),
) -> list[coordinator_pb2.GenerateStreamResponse]:
    """One message per delta (token id = index + 100); the last carries finish reason and stats."""
    messages = [
        coordinator_pb2.GenerateStreamResponse(text_delta=delta, token_ids=[100 + i], request_id="req-s")
        for i, delta in enumerate(deltas)
    ]
    messages[-1].finish_reason = coordinator_pb2.FINISH_REASON_LENGTH
    messages[-1].stats.CopyFrom(sample_stats(algorithm=common_pb2.ALGORITHM_SD))
    return messages
