"""Domain exceptions. The one error interceptor (``core.serving.interceptor``) maps them to gRPC codes.

This module imports no gRPC, so pure code can raise these errors.
"""

from __future__ import annotations

import enum


class ErrorKind(enum.Enum):
    """The status a domain error becomes on the wire (names match ``grpc.StatusCode``)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    NOT_FOUND = "NOT_FOUND"
    CANCELLED = "CANCELLED"


class PolyspecError(Exception):
    """Base of every error whose message is safe and useful to show the caller."""

    kind: ErrorKind = ErrorKind.FAILED_PRECONDITION

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgumentError(PolyspecError):
    """Bad input: names the field and says what is wrong with it."""

    kind = ErrorKind.INVALID_ARGUMENT

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class ContextMissError(PolyspecError):
    """The cached prefix a request refers to is not (or no longer) held; resend the whole context."""

    kind = ErrorKind.FAILED_PRECONDITION


class ResourceExhaustedError(PolyspecError):
    """Over a configured budget (cache memory, queue length); retry later or elsewhere."""

    kind = ErrorKind.RESOURCE_EXHAUSTED


class UnavailableError(PolyspecError):
    """A service is unreachable, draining or not ready; names which one."""

    kind = ErrorKind.UNAVAILABLE


class DeadlineExceededError(PolyspecError):
    """The caller's deadline passed before the work finished."""

    kind = ErrorKind.DEADLINE_EXCEEDED


class UnknownTokenMaskError(PolyspecError):
    """A named token mask is not held (never registered, or evicted); register it with SetTokenMask."""

    kind = ErrorKind.FAILED_PRECONDITION
