"""The one error interceptor: domain exceptions -> gRPC status codes; and the acceptance marker.

A ``PolyspecError`` becomes its status code and message, with its machine-readable reason as a
``google.rpc.ErrorInfo`` in the status details (``core.serving.status``). Anything else becomes
INTERNAL with a generic message (the details go to the log, never to the caller). A request whose
bytes do not parse as the method's request message is INVALID_ARGUMENT (field ``request``), not the
UNKNOWN gRPC would answer.

``mark_accepted`` sends the ``polyspec-accepted`` header (initial metadata); a handler calls it once it
admitted a request, before any work. A client that sees a failed call without it knows the server never
started on the request (refused connection, draining server, connection lost before the handler ran,
refused at admission), so re-sending it cannot run the work twice; with it, a retry might.

``HandlerTasks`` records the running handlers, so a stopping server can wait for the ones it cut to run
their cleanup.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import grpc
import structlog

from core.errors import InvalidArgumentError, PolyspecError
from core.serving.status import status_for

log = structlog.get_logger(__name__)

# The initial-metadata entry a server sends once a handler has started (the SDK reads the same key).
ACCEPTED_METADATA = ("polyspec-accepted", "1")

if TYPE_CHECKING:
    _Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
    _Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
    _UnaryBehavior: TypeAlias = Callable[[Any, _Context], Awaitable[Any]]
    _StreamBehavior: TypeAlias = Callable[[Any, _Context], AsyncIterator[Any]]
    _Deserializer: TypeAlias = Callable[[bytes], Any]


@dataclass(frozen=True)
class Undecodable:
    """What a request that does not parse deserializes to; the wrapped handler refuses it."""

    message_name: str
    error: str

    def refusal(self) -> InvalidArgumentError:
        return InvalidArgumentError(
            "request", f"the bytes do not parse as a {self.message_name} message ({self.error})"
        )


def _message_name(deserializer: _Deserializer) -> str:
    """``polyspec.v1.GenerateRequest`` for ``GenerateRequest.FromString``; a generic name otherwise."""
    owner = getattr(deserializer, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    name = getattr(descriptor, "full_name", None)
    return name if isinstance(name, str) else "request"


def tolerant_deserializer(deserializer: _Deserializer | None) -> _Deserializer | None:
    """Wraps a request deserializer so undecodable bytes become an ``Undecodable`` instead of raising."""
    if deserializer is None:
        return None
    name = _message_name(deserializer)

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # DecodeError and any other parse failure of foreign bytes
            return Undecodable(name, str(exc) or type(exc).__name__)

    return parse


async def _abort_for(exc: BaseException, context: _Context, method: str) -> None:
    if isinstance(exc, PolyspecError):
        status = status_for(exc)
        log.info(
            "request_failed",
            method=method,
            code=exc.kind.value,
            error_reason=exc.error_reason.value,
            reason=exc.message,
        )
        await context.abort(status.code, status.details, status.trailing_metadata)
    log.error("internal_error", method=method, exc_info=exc)
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}; see the server log")


def _wrap_unary(behavior: _UnaryBehavior, method: str) -> _UnaryBehavior:
    async def wrapped(request: Any, context: _Context) -> Any:
        try:
            if isinstance(request, Undecodable):
                raise request.refusal()
            return await behavior(request, context)
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await _abort_for(exc, context, method)
            raise  # unreachable: abort raises

    return wrapped


def _wrap_stream(behavior: _StreamBehavior, method: str) -> _StreamBehavior:
    """Handlers yield responses, or are coroutines writing with ``context.write`` (Health.Watch)."""

    async def wrapped(request: Any, context: _Context) -> AsyncIterator[Any]:
        try:
            if isinstance(request, Undecodable):
                raise request.refusal()
            result: Any = behavior(request, context)
            if inspect.isawaitable(result):
                await result
                return
            async for item in result:
                yield item
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:
            await _abort_for(exc, context, method)
            raise

    return wrapped


class ErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Maps ``PolyspecError`` subclasses to their status codes on unary and server-streaming methods.

    Undecodable requests of those methods are INVALID_ARGUMENT naming the expected message.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        deserializer = tolerant_deserializer(handler.request_deserializer)
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(cast("_UnaryBehavior", handler.unary_unary), method),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(cast("_StreamBehavior", handler.unary_stream), method),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


async def mark_accepted(context: _Context) -> None:
    """Sends ``ACCEPTED_METADATA``: the handler took the request and is starting work on it.

    Call it once a request is admitted and before any work: a failure before it (a refused token, an
    undecodable request, an admission refusal) tells the client that re-sending cannot run the work twice.
    """
    await context.send_initial_metadata((ACCEPTED_METADATA,))


class HandlerTasks(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Records the task of every running unary and server-streaming handler in ``running``.

    A server that stops cancels the calls still running past its grace, but returns before their
    handlers have unwound; ``wait`` lets it wait for their cleanup (``finally`` blocks) to run.
    """

    def __init__(self) -> None:
        self.running: set[asyncio.Task[Any]] = set()

    def _track(self) -> None:
        task = asyncio.current_task()
        if task is not None and task not in self.running:
            self.running.add(task)
            task.add_done_callback(self.running.discard)

    async def wait(self, timeout: float) -> int:
        """Waits up to ``timeout`` seconds for the running handlers to end; returns how many did not."""
        if self.running:
            await asyncio.wait(set(self.running), timeout=timeout)
        return len(self.running)

    def _tracking_unary(self, behavior: _UnaryBehavior) -> _UnaryBehavior:
        async def tracked(request: Any, context: _Context) -> Any:
            self._track()
            return await behavior(request, context)

        return tracked

    def _tracking_stream(self, behavior: _StreamBehavior) -> _StreamBehavior:
        async def tracked(request: Any, context: _Context) -> AsyncIterator[Any]:
            self._track()
            async for item in behavior(request, context):
                yield item

        return tracked

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                self._tracking_unary(cast("_UnaryBehavior", handler.unary_unary)),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                self._tracking_stream(cast("_StreamBehavior", handler.unary_stream)),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
