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

from core.errors import ERROR_DOMAIN, ErrorReason, InvalidArgumentError, PolyspecError

# The trailer that carries a serialized google.rpc.Status (grpc_status.rpc_status's key).
STATUS_DETAILS_KEY = "grpc-status-details-bin"


def error_info(exc: PolyspecError) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo of a domain error."""
    metadata = {"field": exc.field} if isinstance(exc, InvalidArgumentError) else {}
    return error_details_pb2.ErrorInfo(domain=ERROR_DOMAIN, reason=exc.error_reason.value, metadata=metadata)


def status_for(exc: PolyspecError) -> grpc.Status:
    """The gRPC status of a domain error: its code, its message, and its ErrorInfo in the details."""
    code: grpc.StatusCode = getattr(grpc.StatusCode, exc.kind.value)
    detail = any_pb2.Any()
    detail.Pack(error_info(exc))
    status = status_pb2.Status(code=code.value[0], message=exc.message, details=[detail])
    return rpc_status.to_status(status)


def error_reason(error: grpc.aio.AioRpcError) -> ErrorReason | None:
    """The polyspec reason a failed call carries; ``None`` without one (or with one unknown here)."""
    trailing = cast("Iterable[tuple[str, str | bytes]]", error.trailing_metadata() or ())
    for key, value in trailing:
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status = status_pb2.Status.FromString(value)
        for detail in status.details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info) and info.domain == ERROR_DOMAIN:
                try:
                    return ErrorReason(info.reason)
                except ValueError:
                    return None
    return None
