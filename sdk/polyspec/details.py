"""The retry hint of a failed call: ``google.rpc.RetryInfo`` in the ``grpc-status-details-bin`` trailer.

A coordinator that refuses a request at admission answers RESOURCE_EXHAUSTED with a serialized
``google.rpc.Status`` in that trailer, whose details hold a ``google.rpc.RetryInfo`` (how long to wait
before trying again). The SDK depends on grpcio and protobuf only, not on the googleapis protos, so it
reads those messages through private mirrors of their wire layout (field numbers and types), built in a
descriptor pool of its own: nothing is registered in protobuf's default pool.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

# The trailer that carries a serialized google.rpc.Status.
STATUS_DETAILS_KEY = "grpc-status-details-bin"
RETRY_INFO_TYPE = "google.rpc.RetryInfo"

_PACKAGE = "polyspec.sdk.wire"
_Field = descriptor_pb2.FieldDescriptorProto


def _message(
    file: descriptor_pb2.FileDescriptorProto, name: str, fields: Iterable[tuple[str, int, int, str]]
) -> None:
    """Adds a message of ``(name, number, type, message type)`` fields (all singular but ``details``)."""
    message = file.message_type.add(name=name)
    for field_name, number, kind, type_name in fields:
        label = _Field.LABEL_REPEATED if field_name == "details" else _Field.LABEL_OPTIONAL
        field = message.field.add(name=field_name, number=number, type=kind, label=label)
        if type_name:
            field.type_name = f".{_PACKAGE}.{type_name}"


@functools.cache
def _classes() -> dict[str, Any]:
    """Message classes with the wire layout of Status, Any, RetryInfo and Duration."""
    file = descriptor_pb2.FileDescriptorProto(
        name="polyspec/sdk/wire_mirrors.proto", package=_PACKAGE, syntax="proto3"
    )
    _message(file, "Any", [("type_url", 1, _Field.TYPE_STRING, ""), ("value", 2, _Field.TYPE_BYTES, "")])
    _message(
        file,
        "Status",
        [
            ("code", 1, _Field.TYPE_INT32, ""),
            ("message", 2, _Field.TYPE_STRING, ""),
            ("details", 3, _Field.TYPE_MESSAGE, "Any"),
        ],
    )
    _message(file, "Duration", [("seconds", 1, _Field.TYPE_INT64, ""), ("nanos", 2, _Field.TYPE_INT32, "")])
    _message(file, "RetryInfo", [("retry_delay", 1, _Field.TYPE_MESSAGE, "Duration")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
        for name in ("Status", "RetryInfo")
    }


def retry_delay_from_status(status_bytes: bytes) -> float | None:
    """The RetryInfo delay (seconds) in a serialized ``google.rpc.Status``; None without a usable one."""
    classes = _classes()
    try:
        status = classes["Status"].FromString(status_bytes)
        for detail in status.details:
            if detail.type_url.rpartition("/")[2] == RETRY_INFO_TYPE:
                delay = classes["RetryInfo"].FromString(detail.value).retry_delay
                seconds = delay.seconds + delay.nanos / 1e9
                return float(seconds) if seconds >= 0 else None
    except DecodeError:
        return None
    return None


def retry_delay_of(error: object) -> float | None:
    """The retry hint of a failed call (sync ``grpc.RpcError`` or ``grpc.aio.AioRpcError``), in seconds."""
    trailing = getattr(error, "trailing_metadata", None)
    if not callable(trailing):
        return None
    try:
        metadata: Iterable[tuple[str, str | bytes]] | None = trailing()
    except Exception:  # a call object that cannot report its trailers: no hint
        return None
    for key, value in metadata or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            return retry_delay_from_status(value)
    return None
