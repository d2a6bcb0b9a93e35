"""Async client of one model service (drafter or target) over its own gRPC channel, on domain types.

Calls go in and answers come out as ``core.modelcalls`` types (``coordinator.wire`` converts them). The
client sends context deltas: it remembers, per sequence, the tokens the server holds after the
last successful call (context + draft tokens after Draft, context + candidates after Score) and sends
only what follows their longest common prefix with the new context, plus a checksum of that prefix.
On a context miss (FAILED_PRECONDITION: evicted, restarted, another replica) it resends the whole
context once. A call names its whole context (``ContextRef.whole``); the client shortens it to the delta.
RPC failures become ``core.errors`` exceptions naming the service.

FAILED_PRECONDITION has two causes, told apart by the reason in the status details
(``google.rpc.ErrorInfo``, see ``core.serving.status``): an unknown token mask
(``UnknownTokenMaskError``: register the mask again with SetTokenMask, then retry) and a context miss
(``ContextMissError``: resend the whole context). ``set_token_mask`` registers a mask (TLI's
vocabulary intersection); callers keep track of which replica holds which mask.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, Protocol, TypeVar

import grpc
from google.protobuf.message import Message
from polyspec.v1 import model_pb2, model_pb2_grpc

from coordinator import wire
from core.checksum import prefix_checksum
from core.errors import (
    ContextMissError,
    DeadlineExceededError,
    ErrorReason,
    InvalidArgumentError,
    ResourceExhaustedError,
    UnavailableError,
    UnknownStopClassifierError,
    UnknownTokenMaskError,
)
from core.modelcalls import ContextRef, DraftCall, DraftOutcome, EngineInfo, ScoreCall, ScoreOutcome
from core.serving.server import MiB
from core.serving.status import error_reason
from core.serving.tls import ClientTLS, open_channel

_Call = TypeVar("_Call", DraftCall, ScoreCall)
_Outcome = TypeVar("_Outcome", DraftOutcome, ScoreOutcome)


class CallObserver(Protocol):
    """Told about every finished model-service call (per-hop latency metrics)."""

    def __call__(self, role: str, method: str, seconds: float, ok: bool) -> None: ...


@dataclass
class Traffic:
    """Serialized bytes exchanged with the model services for one request."""

    bytes_sent: int = 0
    bytes_received: int = 0


class Deadline:
    """The time left to a request; ``None`` = no deadline. Bounds every downstream call."""

    def __init__(self, seconds: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._expires = None if seconds is None else clock() + seconds

    def remaining(self) -> float | None:
        return None if self._expires is None else self._expires - self._clock()

    def expired(self) -> bool:
        remaining = self.remaining()
        return remaining is not None and remaining <= 0

    def call_timeout(self, cap: float) -> float:
        """The timeout of the next call: ``cap`` cut to the time left; raises once the deadline passed."""
        remaining = self.remaining()
        if remaining is None:
            return cap
        if remaining <= 0:
            raise DeadlineExceededError("the request's deadline passed")
        return min(cap, remaining)


@dataclass(frozen=True)
class CallScope:
    """What bounds and accounts the model-service calls of one request."""

    deadline: Deadline
    traffic: Traffic
    timeout_cap: float  # the coordinator's per-call timeout

    def with_timeout(self, seconds: float) -> CallScope:
        """The same request's scope with another per-call timeout (one attempt's)."""
        return replace(self, timeout_cap=seconds)


def map_rpc_error(error: grpc.aio.AioRpcError, role: str, address: str) -> Exception:
    """The domain exception for a failed call to the ``role`` service at ``address``."""
    service = f"{role} at {address}"
    code, details = error.code(), error.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE:
        return UnavailableError(f"{service} is unavailable: {details}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return DeadlineExceededError(f"{service} did not answer in time: {details}")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ResourceExhaustedError(f"{service} is over capacity: {details}")
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        if error_reason(error) is ErrorReason.UNKNOWN_TOKEN_MASK:
            return UnknownTokenMaskError(f"{service}: {details}")
        if error_reason(error) is ErrorReason.UNKNOWN_STOP_CLASSIFIER:
            return UnknownStopClassifierError(f"{service}: {details}")
        return ContextMissError(f"{service}: {details}")
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgumentError(role, f"{service} refused the request: {details}")
    if code == grpc.StatusCode.CANCELLED:
        return UnavailableError(f"{service} cancelled the call: {details}")
    return RuntimeError(f"{service} failed with {code.name}: {details}")


def common_prefix_len(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


@dataclass(frozen=True)
class _ContextCall(Generic[_Call, _Outcome]):
    """One Draft or Score call: its wire forms and what the server holds after it."""

    method: str
    call: _Call  # names its whole context
    encode: Callable[[_Call], Message]
    invoke: Callable[..., Awaitable[Any]]  # the stub method: (request, timeout=...)
    decode: Callable[[Any], _Outcome]
    held_after: Callable[[_Outcome], list[int]]


class ModelServiceClient:
    """One channel to one model service address, with per-sequence context tracking."""

    def __init__(
        self,
        address: str,
        role: str,
        *,
        max_message_bytes: int = 64 * MiB,
        observer: CallObserver | None = None,
        tls: ClientTLS | None = None,
    ) -> None:
        self.address = address
        self.role = role
        self._channel = open_channel(address, max_message_bytes=max_message_bytes, tls=tls)
        self._stub = model_pb2_grpc.ModelServiceStub(self._channel)  # type: ignore[no-untyped-call]
        self._observer = observer
        # Tokens the server holds per sequence after our last call ([] = touched, state unknown).
        self._held: dict[str, list[int]] = {}

    @property
    def name(self) -> str:
        return f"{self.role} at {self.address}"

    def holds(self, sequence_id: str) -> bool:
        """Whether this service may hold a cache for the sequence (it was sent a call for it)."""
        return sequence_id in self._held

    async def close(self, grace: float | None = None) -> None:
        await self._channel.close(grace)

    async def info(self, *, timeout: float, wait_for_ready: bool = False) -> EngineInfo:
        """The service's identity, limits and tokenizer."""
        start = time.monotonic()
        try:
            response: model_pb2.InfoResponse = await self._stub.Info(
                model_pb2.InfoRequest(), timeout=timeout, wait_for_ready=wait_for_ready
            )
        except grpc.aio.AioRpcError as exc:
            self._observe("Info", start, ok=False)
            raise map_rpc_error(exc, self.role, self.address) from None
        self._observe("Info", start, ok=True)
        return wire.engine_info(response)

    async def draft(self, call: DraftCall, scope: CallScope) -> DraftOutcome:
        """Drafts after ``call.context`` (whole); the server then holds the context and the draft tokens."""
        context = call.context.tokens

        def held_after(outcome: DraftOutcome) -> list[int]:
            return [*context, *outcome.draft_tokens]

        request = _ContextCall(
            "Draft", call, wire.draft_request, self._stub.Draft, wire.draft_outcome, held_after
        )
        return await self._context_call(request, scope)

    async def score(self, call: ScoreCall, scope: CallScope) -> ScoreOutcome:
        """Scores ``call.candidate_tokens`` after ``call.context`` (whole)."""
        held = [*call.context.tokens, *call.candidate_tokens]
        request = _ContextCall(
            "Score", call, wire.score_request, self._stub.Score, wire.score_outcome, lambda _: held
        )
        return await self._context_call(request, scope)

    async def set_stop_classifier(
        self, classifier_id: str, spec_json: str, weights: bytes, scope: CallScope
    ) -> int:
        """Registers a stop classifier under ``classifier_id`` (Draft then names it); returns its size."""
        request = model_pb2.SetStopClassifierRequest(
            classifier_id=classifier_id, spec_json=spec_json, weights=weights
        )
        timeout = scope.deadline.call_timeout(scope.timeout_cap)
        scope.traffic.bytes_sent += request.ByteSize()
        start = time.monotonic()
        try:
            response: model_pb2.SetStopClassifierResponse = await self._stub.SetStopClassifier(
                request, timeout=timeout
            )
        except grpc.aio.AioRpcError as exc:
            self._observe("SetStopClassifier", start, ok=False)
            raise map_rpc_error(exc, self.role, self.address) from None
        self._observe("SetStopClassifier", start, ok=True)
        scope.traffic.bytes_received += response.ByteSize()
        return response.parameters

    async def set_token_mask(self, mask_id: str, allowed_bitmap: bytes, scope: CallScope) -> int:
        """Registers a bitmap of allowed token ids under ``mask_id`` (Draft then names it); returns how many
        ids it allows."""
        request = model_pb2.SetTokenMaskRequest(mask_id=mask_id, allowed_bitmap=allowed_bitmap)
        timeout = scope.deadline.call_timeout(scope.timeout_cap)
        scope.traffic.bytes_sent += request.ByteSize()
        start = time.monotonic()
        try:
            response: model_pb2.SetTokenMaskResponse = await self._stub.SetTokenMask(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            self._observe("SetTokenMask", start, ok=False)
            raise map_rpc_error(exc, self.role, self.address) from None
        self._observe("SetTokenMask", start, ok=True)
        scope.traffic.bytes_received += response.ByteSize()
        return response.allowed_tokens

    async def release(self, sequence_ids: Sequence[str], *, timeout: float) -> int:
        """Drops the sequences' caches on the service; forgets them here either way."""
        for sequence_id in sequence_ids:
            self._held.pop(sequence_id, None)
        start = time.monotonic()
        try:
            response: model_pb2.ReleaseResponse = await self._stub.Release(
                model_pb2.ReleaseRequest(sequence_ids=list(sequence_ids)), timeout=timeout
            )
        except grpc.aio.AioRpcError as exc:
            self._observe("Release", start, ok=False)
            raise map_rpc_error(exc, self.role, self.address) from None
        self._observe("Release", start, ok=True)
        return response.released

    def _cached_prefix(self, sequence_id: str, context: Sequence[int]) -> int:
        """Tokens of ``context`` the next call on the sequence leaves to the server's cache."""
        held = self._held.get(sequence_id, [])
        # Always send at least one token, so the server has fresh logits without re-deriving them.
        return min(common_prefix_len(held, context), max(0, len(context) - 1))

    def uncached_tokens(self, sequence_id: str, context: Sequence[int]) -> int:
        """Tokens of ``context`` the next call on the sequence sends: what the server must catch up on."""
        return len(context) - self._cached_prefix(sequence_id, context)

    def _context_ref(self, sequence_id: str, context: Sequence[int]) -> ContextRef:
        cached = self._cached_prefix(sequence_id, context)
        return ContextRef(
            sequence_id=sequence_id,
            cached_prefix_len=cached,
            cached_prefix_checksum=prefix_checksum(context[:cached]) if cached else 0,
            tokens=tuple(context[cached:]),
        )

    async def _context_call(self, request: _ContextCall[_Call, _Outcome], scope: CallScope) -> _Outcome:
        whole = request.call.context
        assert whole.cached_prefix_len == 0, "a call names its whole context; the client sends the delta"
        delta = self._context_ref(whole.sequence_id, whole.tokens)
        self._held[whole.sequence_id] = []  # touched; the server's state is unknown until it answers
        try:
            outcome = await self._timed(request, replace(request.call, context=delta), scope)
        except ContextMissError:
            if delta.cached_prefix_len == 0:
                raise RuntimeError(f"{self.name} refused a whole context as a context miss") from None
            outcome = await self._timed(request, request.call, scope)
        self._held[whole.sequence_id] = request.held_after(outcome)
        return outcome

    async def _timed(self, request: _ContextCall[_Call, _Outcome], call: _Call, scope: CallScope) -> _Outcome:
        message = request.encode(call)
        timeout = scope.deadline.call_timeout(scope.timeout_cap)
        scope.traffic.bytes_sent += message.ByteSize()
        start = time.monotonic()
        try:
            response = await request.invoke(message, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            self._observe(request.method, start, ok=False)
            raise map_rpc_error(exc, self.role, self.address) from None
        except asyncio.CancelledError:
            self._observe(request.method, start, ok=False)
            raise
        self._observe(request.method, start, ok=True)
        scope.traffic.bytes_received += response.ByteSize()
        return request.decode(response)

    def _observe(self, method: str, start: float, *, ok: bool) -> None:
        if self._observer is not None:
            self._observer(self.role, method, time.monotonic() - start, ok)
