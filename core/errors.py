"""Domain exceptions. The one error interceptor (``core.serving.interceptor``) maps them to gRPC codes.

Each error also carries a machine-readable ``error_reason``: the interceptor sends it as a
``google.rpc.ErrorInfo`` (domain ``ERROR_DOMAIN``) in the status details, so a caller tells causes that
share a status code apart (FAILED_PRECONDITION: a context miss or an unknown token mask) without
reading the message. This module imports no gRPC, so pure code can raise these errors.
"""

from __future__ import annotations

import enum
from typing import ClassVar

# The ErrorInfo domain of every polyspec error reason.
ERROR_DOMAIN = "polyspec.dev"


class ErrorKind(enum.Enum):
    """The status a domain error becomes on the wire (names match ``grpc.StatusCode``)."""

    INVALID_ARGUMENT = "INVALID_ARGUMENT"
    FAILED_PRECONDITION = "FAILED_PRECONDITION"
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    NOT_FOUND = "NOT_FOUND"
    CANCELLED = "CANCELLED"
    UNIMPLEMENTED = "UNIMPLEMENTED"


class ErrorReason(enum.Enum):
    """Why a call failed, as ``google.rpc.ErrorInfo.reason`` (stable wire values: never rename one)."""

    FAILED_PRECONDITION = "FAILED_PRECONDITION"  # generic: the message says which precondition
    INVALID_ARGUMENT = "INVALID_ARGUMENT"  # ErrorInfo.metadata["field"] names the field
    CONTEXT_MISS = "CONTEXT_MISS"  # resend the whole context (cached_prefix_len = 0)
    UNKNOWN_TOKEN_MASK = "UNKNOWN_TOKEN_MASK"  # register the mask with SetTokenMask, then retry
    UNKNOWN_STOP_CLASSIFIER = "UNKNOWN_STOP_CLASSIFIER"  # register it with SetStopClassifier, then retry
    RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
    COORDINATOR_AT_CAPACITY = "COORDINATOR_AT_CAPACITY"  # admission refused: every slot and queue place taken
    UNAVAILABLE = "UNAVAILABLE"
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
    PAIR_MISMATCH = "PAIR_MISMATCH"  # a service is not what the configuration declares
    MODEL_STORE = "MODEL_STORE"  # a model or vocabulary could not be fetched, verified or converted
    CHECKSUM_MISMATCH = "CHECKSUM_MISMATCH"
    UNKNOWN_MODEL = "UNKNOWN_MODEL"
    CALL_NOT_SERVED = "CALL_NOT_SERVED"  # a call this service has not (Score on a lookup drafter)


class PolyspecError(Exception):
    """Base of every error whose message is safe and useful to show the caller."""

    kind: ClassVar[ErrorKind] = ErrorKind.FAILED_PRECONDITION
    error_reason: ClassVar[ErrorReason] = ErrorReason.FAILED_PRECONDITION

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgumentError(PolyspecError):
    """Bad input: names the field and says what is wrong with it."""

    kind = ErrorKind.INVALID_ARGUMENT
    error_reason = ErrorReason.INVALID_ARGUMENT

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class ContextMissError(PolyspecError):
    """The cached prefix a request refers to is not (or no longer) held; resend the whole context."""

    kind = ErrorKind.FAILED_PRECONDITION
    error_reason = ErrorReason.CONTEXT_MISS


class ResourceExhaustedError(PolyspecError):
    """Over a configured budget (cache memory, queue length); retry later or elsewhere.

    ``retry_after_seconds``, when set, is sent as a ``google.rpc.RetryInfo`` in the status details.
    """

    kind = ErrorKind.RESOURCE_EXHAUSTED
    error_reason = ErrorReason.RESOURCE_EXHAUSTED

    def __init__(self, message: str, *, retry_after_seconds: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class UnavailableError(PolyspecError):
    """A service is unreachable, draining or not ready; names which one."""

    kind = ErrorKind.UNAVAILABLE
    error_reason = ErrorReason.UNAVAILABLE


class DeadlineExceededError(PolyspecError):
    """The caller's deadline passed before the work finished."""

    kind = ErrorKind.DEADLINE_EXCEEDED
    error_reason = ErrorReason.DEADLINE_EXCEEDED


class UnknownTokenMaskError(PolyspecError):
    """A named token mask is not held (never registered, or evicted); register it with SetTokenMask."""

    kind = ErrorKind.FAILED_PRECONDITION
    error_reason = ErrorReason.UNKNOWN_TOKEN_MASK


class UnknownStopClassifierError(PolyspecError):
    """A named stop classifier is not held (never registered, or evicted); register it again."""

    kind = ErrorKind.FAILED_PRECONDITION
    error_reason = ErrorReason.UNKNOWN_STOP_CLASSIFIER


class CallNotServedError(PolyspecError):
    """The service does not serve this call at all (a model-free drafter has no Score); no retry helps."""

    kind = ErrorKind.UNIMPLEMENTED
    error_reason = ErrorReason.CALL_NOT_SERVED
