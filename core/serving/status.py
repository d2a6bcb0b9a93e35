"""Machine-readable error reasons on the wire: ``google.rpc.ErrorInfo`` in the gRPC status details.

The server side (``status_for``, used by the error interceptor) sends every ``PolyspecError`` as a
``google.rpc.Status`` whose details hold one ``ErrorInfo`` (domain ``core.errors.ERROR_DOMAIN``,
reason ``exc.error_reason``; ``metadata["field"]`` for invalid arguments), in the standard
``grpc-status-details-bin`` trailer that ``grpc_status.rpc_status`` reads and writes. The client side
(``error_reason``) reads the reason back from a failed call.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]  # no py.typed
from grpc_status import rpc_status

from core.errors import ERROR_DOMAIN, ErrorReason, InvalidArgumentError, PolyspecError, ResourceExhaustedError

# The trailer that carries a serialized google.rpc.Status (grpc_status.rpc_status's key).
STATUS_DETAILS_KEY = "grpc-status-details-bin"


def error_info(exc: PolyspecError) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo of a domain error."""
    metadata = {"field": exc.field} if isinstance(exc, InvalidArgumentError) else {}
    return error_details_pb2.ErrorInfo(domain=ERROR_DOMAIN, reason=exc.error_reason.value, metadata=metadata)


def status_for(exc: PolyspecError) -> grpc.Status:
    """The gRPC status of a domain error: its code, its message, and its ErrorInfo in the details.

    A ``ResourceExhaustedError`` with a ``retry_after_seconds`` also carries a ``google.rpc.RetryInfo``.
    """
    code: grpc.StatusCode = getattr(grpc.StatusCode, exc.kind.value)
    detail = any_pb2.Any()
    detail.Pack(error_info(exc))
    details = [detail]
    if isinstance(exc, ResourceExhaustedError) and exc.retry_after_seconds is not None:
        retry = error_details_pb2.RetryInfo()
        retry.retry_delay.FromNanoseconds(round(exc.retry_after_seconds * 1e9))
        hint = any_pb2.Any()
        hint.Pack(retry)
        details.append(hint)
    status = status_pb2.Status(code=code.value[0], message=exc.message, details=details)
    return rpc_status.to_status(status)


def retry_delay_seconds(error: grpc.aio.AioRpcError) -> float | None:
    """The ``google.rpc.RetryInfo`` delay a failed call carries, in seconds; ``None`` without one."""
    for detail in _status_details(error):
        retry = error_details_pb2.RetryInfo()
        if detail.Unpack(retry):
            return float(retry.retry_delay.ToNanoseconds()) / 1e9
    return None


def _status_details(error: grpc.aio.AioRpcError) -> list[any_pb2.Any]:
    """The details of the ``google.rpc.Status`` a failed call carries (empty without one)."""
    trailing = cast("Iterable[tuple[str, str | bytes]]", error.trailing_metadata() or ())
    for key, value in trailing:
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            return list(status_pb2.Status.FromString(value).details)
    return []


def error_reason(error: grpc.aio.AioRpcError) -> ErrorReason | None:
    """The polyspec reason a failed call carries; ``None`` without one (or with one unknown here)."""
    for detail in _status_details(error):
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info) and info.domain == ERROR_DOMAIN:
            try:
                return ErrorReason(info.reason)
            except ValueError:
                return None
    return None
