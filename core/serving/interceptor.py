"""The one error interceptor: domain exceptions -> gRPC status codes.

A ``PolyspecError`` becomes its status code and message, with its machine-readable reason as a
``google.rpc.ErrorInfo`` in the status details (``core.serving.status``). Anything else becomes
INTERNAL with a generic message (the details go to the log, never to the caller).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import grpc
import structlog

from core.errors import PolyspecError
from core.serving.status import status_for

log = structlog.get_logger(__name__)

if TYPE_CHECKING:
    _Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
    _Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
    _UnaryBehavior: TypeAlias = Callable[[Any, _Context], Awaitable[Any]]
    _StreamBehavior: TypeAlias = Callable[[Any, _Context], AsyncIterator[Any]]


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
    """Maps ``PolyspecError`` subclasses to their status codes on unary and server-streaming methods."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(cast("_UnaryBehavior", handler.unary_unary), method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(cast("_StreamBehavior", handler.unary_stream), method),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
