"""Typed errors of the polyspec SDK, one class per gRPC status code the coordinator uses.

Every error carries the status ``code`` (a ``grpc.StatusCode``), the server's ``message`` and its retry
hint ``retry_after_seconds`` (a ``google.rpc.RetryInfo`` in the status details; None without one). The
client retries ``UnavailableError``, and a ``ResourceExhaustedError`` with a retry hint (a coordinator at
capacity), only before the coordinator accepted the request (``polyspec.retry``).
"""

from __future__ import annotations

import grpc

from polyspec.details import retry_delay_of


class PolyspecError(Exception):
    """Base of every SDK error: a gRPC status code and a message a person can act on."""

    default_code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(
        self, message: str, code: grpc.StatusCode | None = None, *, retry_after_seconds: float | None = None
    ) -> None:
        self.code: grpc.StatusCode = self.default_code if code is None else code
        self.message = message
        self.retry_after_seconds = retry_after_seconds
        super().__init__(f"{self.code.name}: {message}")

    @property
    def code_name(self) -> str:
        """The status code's name, e.g. ``"INVALID_ARGUMENT"``."""
        return str(self.code.name)


class InvalidArgumentError(PolyspecError, ValueError):
    """The request is malformed; the message names the field and the reason (client or server side)."""

    default_code = grpc.StatusCode.INVALID_ARGUMENT


class FailedPreconditionError(PolyspecError):
    """The server cannot run this request in its current configuration (e.g. incompatible models)."""

    default_code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhaustedError(PolyspecError):
    """Over a server budget (admission, queue, cache memory, message size); retry later or elsewhere.

    A coordinator at capacity sends a retry hint (``retry_after_seconds``); the client waits it and
    retries on its own when the request was refused before it ran.
    """

    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED


class UnavailableError(PolyspecError):
    """The coordinator (or a service behind it) is unreachable, draining or not ready."""

    default_code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceededError(PolyspecError):
    """The call's deadline passed before the generation finished."""

    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFoundError(PolyspecError):
    """Something the request names does not exist on the server."""

    default_code = grpc.StatusCode.NOT_FOUND


class RequestCancelledError(PolyspecError):
    """The call was cancelled (by the caller or the server)."""

    default_code = grpc.StatusCode.CANCELLED


class UnauthenticatedError(PolyspecError):
    """The coordinator requires a bearer token and the call carried none or a wrong one."""

    default_code = grpc.StatusCode.UNAUTHENTICATED


class UnimplementedError(PolyspecError):
    """The server does not implement the method (e.g. an older coordinator)."""

    default_code = grpc.StatusCode.UNIMPLEMENTED


class InternalError(PolyspecError):
    """An unexpected failure in the server (details are in its log), or a malformed response."""

    default_code = grpc.StatusCode.INTERNAL


_BY_CODE: dict[grpc.StatusCode, type[PolyspecError]] = {
    cls.default_code: cls
    for cls in (
        InvalidArgumentError,
        FailedPreconditionError,
        ResourceExhaustedError,
        UnavailableError,
        DeadlineExceededError,
        NotFoundError,
        RequestCancelledError,
        UnauthenticatedError,
        UnimplementedError,
        InternalError,
    )
}


def error_for_status(
    code: grpc.StatusCode, message: str, *, retry_after_seconds: float | None = None
) -> PolyspecError:
    """The typed error for a status code (``PolyspecError`` itself for codes without a class)."""
    cls = _BY_CODE.get(code, PolyspecError)
    return cls(message, code, retry_after_seconds=retry_after_seconds)


def error_from_rpc(exc: grpc.RpcError) -> PolyspecError:
    """Converts a failed call (sync ``grpc.RpcError`` or ``grpc.aio.AioRpcError``) to its typed error."""
    code_fn = getattr(exc, "code", None)
    details_fn = getattr(exc, "details", None)
    code = code_fn() if callable(code_fn) else None
    details = details_fn() if callable(details_fn) else None
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    message = details if isinstance(details, str) and details else code.name
    return error_for_status(code, message, retry_after_seconds=retry_delay_of(exc))
