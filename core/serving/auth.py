"""An optional bearer-token check: calls must carry ``authorization: Bearer <token>`` metadata.

Without the right token a call is refused with UNAUTHENTICATED before its handler runs. The health
and reflection services stay open (probes and tooling carry no token). The token comes from a file
(a mounted Secret) or an environment variable and is read once, at start-up; compare in constant
time. The token is a shared secret: send it only over TLS, or inside a mesh that encrypts traffic.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection

if TYPE_CHECKING:
    _Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
    _Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]

AUTHORIZATION_KEY = "authorization"
BEARER_PREFIX = "Bearer "
# Services every caller may use without a token.
OPEN_SERVICES = frozenset(
    {
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
        "grpc.reflection.v1.ServerReflection",
    }
)
_MISSING = f"this server requires a bearer token: send the metadata '{AUTHORIZATION_KEY}: Bearer <token>'"
_WRONG = "the bearer token is not valid"


class TokenError(ValueError):
    """The token source is unusable (unreadable file, unset or empty variable, bad characters)."""


def _checked(token: str, source: str) -> str:
    token = token.strip()
    if not token:
        raise TokenError(f"{source} holds an empty token")
    if not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        raise TokenError(f"{source}: a bearer token is printable ASCII without spaces")
    return token


def load_token(file: Path | None, env: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """The token from ``file`` or the variable named ``env`` (not both); None when neither is given."""
    if file is not None and env is not None:
        raise TokenError("give the token as a file or as an environment variable, not both")
    if file is not None:
        try:
            return _checked(file.read_text(encoding="utf-8"), f"token file {file}")
        except OSError as exc:
            raise TokenError(f"cannot read the token file {file}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise TokenError(f"token file {file} is not UTF-8 text") from None
    if env is not None:
        value = (os.environ if environ is None else environ).get(env)
        if value is None:
            raise TokenError(f"environment variable {env} (the bearer token) is not set")
        return _checked(value, f"environment variable {env}")
    return None


def _refusal(handler: _Handler, code: grpc.StatusCode, message: str) -> _Handler:
    """A handler of the same kind as ``handler`` that aborts with ``code``."""

    async def refuse_unary(request: Any, context: _Context) -> Any:
        await context.abort(code, message)

    async def refuse_stream(request: Any, context: _Context) -> AsyncIterator[Any]:
        await context.abort(code, message)
        yield  # unreachable: makes this an async generator

    kwargs = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(refuse_unary, **kwargs)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(refuse_stream, **kwargs)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(refuse_unary, **kwargs)
    return grpc.stream_stream_rpc_method_handler(refuse_stream, **kwargs)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Refuses calls without ``authorization: Bearer <token>`` (UNAUTHENTICATED), except open services."""

    def __init__(self, token: str, open_services: Iterable[str] = OPEN_SERVICES) -> None:
        self._expected = f"{BEARER_PREFIX}{_checked(token, 'the bearer token')}".encode()
        self._open = frozenset(open_services)

    def _failure(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
        """None when the metadata carries the token; else why the call is refused."""
        values = [v for k, v in (metadata or ()) if k.lower() == AUTHORIZATION_KEY]
        if not values:
            return _MISSING
        value = values[0]
        sent = value.encode() if isinstance(value, str) else value
        return None if len(values) == 1 and hmac.compare_digest(sent, self._expected) else _WRONG

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler:
        handler = await continuation(handler_call_details)
        service = handler_call_details.method.lstrip("/").partition("/")[0]
        if handler is None or service in self._open:
            return handler
        failure = self._failure(handler_call_details.invocation_metadata)
        if failure is None:
            return handler
        return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED, failure)
