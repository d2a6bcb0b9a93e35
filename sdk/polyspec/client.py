"""``Client`` (blocking) and ``AsyncClient`` (asyncio) for ``polyspec.v1.CoordinatorService``.

A per-call ``timeout`` (else the client's) becomes the gRPC deadline of the whole call, retries
included. UNAVAILABLE is retried, and RESOURCE_EXHAUSTED after the wait its retry hint asks for (a
coordinator at capacity), only when the coordinator had not yet accepted the request (see
``polyspec.retry``): a generation that started is never silently run again, and a stream is never
retried once something was received. Failed calls raise the typed errors of ``polyspec.errors``.

Security: pass ``credentials`` (``grpc.ssl_channel_credentials``; with a client certificate for
mutual TLS) for a TLS coordinator, and ``bearer_token`` for one that requires a token: it is sent as
``authorization: Bearer <token>`` metadata on every call. Send a token over plaintext only inside a
mesh that encrypts traffic.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Iterator,
    Sequence,
)
from types import TracebackType
from typing import TYPE_CHECKING

import grpc

from polyspec.convert import LookaheadSpec, StreamAssembler, build_request, result_from_proto
from polyspec.errors import InvalidArgumentError, error_from_rpc
from polyspec.retry import ACCEPTED_HEADER, CallBudget, RetryPolicy, accepted_by_server
from polyspec.types import AlgorithmName, ChatInput, GenerationResult, SchedulerName
from polyspec.v1 import coordinator_pb2, coordinator_pb2_grpc

if TYPE_CHECKING:
    from typing import Self

DEFAULT_MAX_NEW_TOKENS = 128
_MiB = 1024 * 1024
Metadata = tuple[tuple[str, str], ...]


def bearer_metadata(token: str | None) -> Metadata | None:
    """The call metadata carrying a bearer token; ``InvalidArgumentError`` for an unusable token."""
    if token is None:
        return None
    if not isinstance(token, str):
        raise InvalidArgumentError(f"bearer_token: must be a string, got {type(token).__name__}")
    if not token or not token.isascii() or not token.isprintable() or any(c.isspace() for c in token):
        raise InvalidArgumentError("bearer_token: must be non-empty printable ASCII without spaces")
    return (("authorization", f"Bearer {token}"),)


def default_channel_options() -> list[tuple[str, int]]:
    """Message caps matching the coordinator's, and keepalive pings the server accepts."""
    return [
        ("grpc.max_send_message_length", 64 * _MiB),
        ("grpc.max_receive_message_length", 64 * _MiB),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


class _ClientBase:
    """Settings shared by both clients: default timeout, retry policy, randomness, clock."""

    def __init__(
        self,
        timeout: float | None,
        max_retries: int,
        retry_policy: RetryPolicy | None,
        rng: random.Random | None,
        clock: Callable[[], float],
        *,
        bearer_token: str | None = None,
    ) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout: must be > 0 seconds, got {timeout}")
        self._metadata = bearer_metadata(bearer_token)
        self.timeout = timeout
        self.retry_policy = retry_policy or RetryPolicy(max_retries=max_retries)
        self._rng = rng or random.Random()
        self._clock = clock

    def _budget(self, timeout: float | None) -> CallBudget:
        call_timeout = self.timeout if timeout is None else timeout
        return CallBudget(self.retry_policy, self._rng, self._clock, call_timeout)


class GenerationStream:
    """A streamed generation: iterate it for text deltas; ``result`` holds the whole result afterwards.

    Leaving a ``with`` block (or calling ``cancel``) before the end cancels the call.
    """

    def __init__(
        self,
        start: Callable[[float | None], Iterable[coordinator_pb2.GenerateStreamResponse]],
        budget: CallBudget,
        sleep: Callable[[float], None],
    ) -> None:
        self._start = start
        self._budget = budget
        self._sleep = sleep
        self._assembler = StreamAssembler()
        self._result: GenerationResult | None = None
        self._deltas = self._run()

    def __iter__(self) -> Iterator[str]:
        return self._deltas

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()

    @property
    def result(self) -> GenerationResult:
        """The assembled result (text, token ids, finish reason, stats); only after the last delta."""
        if self._result is None:
            raise RuntimeError("the stream is not finished: iterate it to the end (or call collect())")
        return self._result

    def collect(self) -> GenerationResult:
        """Consumes the remaining deltas and returns the result."""
        for _ in self._deltas:
            pass
        return self.result

    def cancel(self) -> None:
        """Cancels the call if it is still running."""
        self._deltas.close()

    def _run(self) -> Generator[str, None, None]:
        while True:
            call = self._start(self._budget.attempt_timeout())
            try:
                for message in call:
                    delta = self._assembler.add(message)
                    if delta:
                        yield delta
                break
            except grpc.RpcError as exc:
                error = error_from_rpc(exc)
                accepted = accepted_by_server(exc)
                delay = None if self._assembler.received else self._budget.backoff(error, accepted=accepted)
                if delay is None:
                    raise error from None
                self._sleep(delay)
            finally:
                if not self._assembler.finished and isinstance(call, grpc.Future):
                    call.cancel()
        self._result = self._assembler.result()


class Client(_ClientBase):
    """Blocking client of a polyspec coordinator at ``address`` (``host:port``).

    ``timeout`` is the default deadline of each call in seconds (None: no deadline). ``max_retries``
    bounds the retries on UNAVAILABLE, and on an admission refusal with a retry hint, before the
    coordinator accepted the request (or pass a ``RetryPolicy``; 0 turns retries off); ``rng`` draws
    the backoff jitter. Pass ``credentials`` for TLS
    (``grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)``, the last two
    for mutual TLS) and ``bearer_token`` for a coordinator that requires one. Use it as a context
    manager, or call ``close``.
    """

    def __init__(
        self,
        address: str,
        *,
        timeout: float | None = None,
        max_retries: int = 3,
        retry_policy: RetryPolicy | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        bearer_token: str | None = None,
        options: Sequence[tuple[str, int | str]] | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(timeout, max_retries, retry_policy, rng, clock, bearer_token=bearer_token)
        channel_options = list(default_channel_options() if options is None else options)
        if credentials is None:
            self._channel = grpc.insecure_channel(address, options=channel_options)
        else:
            self._channel = grpc.secure_channel(address, credentials, options=channel_options)
        self._stub = coordinator_pb2_grpc.CoordinatorServiceStub(self._channel)
        self._sleep = sleep
        self.address = address

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def generate(
        self,
        prompt: str | None = None,
        *,
        chat: Sequence[ChatInput] | None = None,
        fim: tuple[str, str] | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        algorithm: AlgorithmName | str = "auto",
        lookahead: LookaheadSpec = None,
        lookahead_k: int | None = None,
        confidence_threshold: float | None = None,
        ignore_eos: bool = False,
        request_id: str | None = None,
        scheduler: SchedulerName | str | None = None,
        timeout: float | None = None,
    ) -> GenerationResult:
        """Generates a continuation of exactly one of ``prompt``, ``chat`` or ``fim`` (prefix, suffix).

        ``temperature`` 0 is greedy; unset means 1.0. ``algorithm``: auto, ar, sd, slem, slrs, tli.
        ``lookahead``: an int k (static), ``"auto"``, ``"static"``, ``"confidence"`` (with
        ``lookahead_k`` / ``confidence_threshold``) or ``"confidence:8:0.4"``; ``"disco"`` (with
        ``lookahead_k``; without it at most the draft length the classifier was trained on) runs the
        pair's trained stop classifier, and a coordinator started without one rejects it with
        INVALID_ARGUMENT (``InvalidArgumentError``).

        ``seed`` seeds every random draw (the seed used is in ``result.stats.seed``). A greedy output
        never depends on it. A sampled output is reproduced by the same seed under a deterministic
        lookahead (static, confidence) with the same drafter and target; under ``auto`` (the default) the
        round boundaries follow measured timings, so each output is an exact sample of the target's law
        but the same seed may give a different one from run to run.

        ``scheduler``: ``"si"`` (one round at a time), ``"dsi"`` (verifications fanned out over the
        target replicas while the drafter drafts on; the same output law; over a single usable replica
        it runs SI) or ``"auto"`` (dsi where it pays); None uses the coordinator's default.
        ``result.stats.scheduler`` says which one ran.
        """
        request = build_request(
            prompt=prompt,
            chat=chat,
            fim=fim,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            algorithm=algorithm,
            lookahead=lookahead,
            lookahead_k=lookahead_k,
            confidence_threshold=confidence_threshold,
            ignore_eos=ignore_eos,
            request_id=request_id,
            scheduler=scheduler,
        )
        return self._generate(request, self._budget(timeout))

    def _generate(self, request: coordinator_pb2.GenerateRequest, budget: CallBudget) -> GenerationResult:
        while True:
            try:
                response = self._stub.Generate(
                    request, timeout=budget.attempt_timeout(), metadata=self._metadata
                )
            except grpc.RpcError as exc:
                error = error_from_rpc(exc)
                delay = budget.backoff(error, accepted=accepted_by_server(exc))
                if delay is None:
                    raise error from None
                self._sleep(delay)
            else:
                return result_from_proto(response)

    def generate_stream(
        self,
        prompt: str | None = None,
        *,
        chat: Sequence[ChatInput] | None = None,
        fim: tuple[str, str] | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        algorithm: AlgorithmName | str = "auto",
        lookahead: LookaheadSpec = None,
        lookahead_k: int | None = None,
        confidence_threshold: float | None = None,
        ignore_eos: bool = False,
        request_id: str | None = None,
        scheduler: SchedulerName | str | None = None,
        timeout: float | None = None,
    ) -> GenerationStream:
        """Like ``generate``, streamed: iterate the returned stream for text deltas, then read ``.result``.

        The call starts on the first iteration.
        """
        request = build_request(
            prompt=prompt,
            chat=chat,
            fim=fim,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            algorithm=algorithm,
            lookahead=lookahead,
            lookahead_k=lookahead_k,
            confidence_threshold=confidence_threshold,
            ignore_eos=ignore_eos,
            request_id=request_id,
            scheduler=scheduler,
        )
        stream_request = coordinator_pb2.GenerateStreamRequest(request=request)

        def start(attempt_timeout: float | None) -> Iterable[coordinator_pb2.GenerateStreamResponse]:
            return self._stub.GenerateStream(stream_request, timeout=attempt_timeout, metadata=self._metadata)

        return GenerationStream(start, self._budget(timeout), self._sleep)


class AsyncGenerationStream:
    """An asyncio streamed generation: ``async for`` text deltas; ``result`` holds the whole result after."""

    def __init__(
        self,
        start: Callable[[float | None], AsyncIterable[coordinator_pb2.GenerateStreamResponse]],
        budget: CallBudget,
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self._start = start
        self._budget = budget
        self._sleep = sleep
        self._assembler = StreamAssembler()
        self._result: GenerationResult | None = None
        self._deltas = self._run()

    def __aiter__(self) -> AsyncIterator[str]:
        return self._deltas

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.cancel()

    @property
    def result(self) -> GenerationResult:
        """The assembled result (text, token ids, finish reason, stats); only after the last delta."""
        if self._result is None:
            raise RuntimeError("the stream is not finished: iterate it to the end (or await collect())")
        return self._result

    async def collect(self) -> GenerationResult:
        """Consumes the remaining deltas and returns the result."""
        async for _ in self._deltas:
            pass
        return self.result

    async def cancel(self) -> None:
        """Cancels the call if it is still running."""
        await self._deltas.aclose()

    async def _run(self) -> AsyncGenerator[str, None]:
        while True:
            call = self._start(self._budget.attempt_timeout())
            try:
                async for message in call:
                    delta = self._assembler.add(message)
                    if delta:
                        yield delta
                break
            except grpc.RpcError as exc:
                error = error_from_rpc(exc)
                accepted = accepted_by_server(exc) or await _stream_accepted(call)
                delay = None if self._assembler.received else self._budget.backoff(error, accepted=accepted)
                if delay is None:
                    raise error from None
                await self._sleep(delay)
            finally:
                if not self._assembler.finished and isinstance(call, grpc.aio.Call):
                    call.cancel()
        self._result = self._assembler.result()


class AsyncClient(_ClientBase):
    """asyncio client of a polyspec coordinator (``grpc.aio``); same options and semantics as ``Client``.

    Create it inside a running event loop; use ``async with`` or ``await close()``.
    """

    def __init__(
        self,
        address: str,
        *,
        timeout: float | None = None,
        max_retries: int = 3,
        retry_policy: RetryPolicy | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        bearer_token: str | None = None,
        options: Sequence[tuple[str, int | str]] | None = None,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(timeout, max_retries, retry_policy, rng, clock, bearer_token=bearer_token)
        channel_options = list(default_channel_options() if options is None else options)
        if credentials is None:
            self._channel = grpc.aio.insecure_channel(address, options=channel_options)
        else:
            self._channel = grpc.aio.secure_channel(address, credentials, options=channel_options)
        self._stub = coordinator_pb2_grpc.CoordinatorServiceStub(self._channel)
        self._sleep = sleep
        self.address = address

    async def close(self) -> None:
        await self._channel.close(grace=None)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def generate(
        self,
        prompt: str | None = None,
        *,
        chat: Sequence[ChatInput] | None = None,
        fim: tuple[str, str] | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        algorithm: AlgorithmName | str = "auto",
        lookahead: LookaheadSpec = None,
        lookahead_k: int | None = None,
        confidence_threshold: float | None = None,
        ignore_eos: bool = False,
        request_id: str | None = None,
        scheduler: SchedulerName | str | None = None,
        timeout: float | None = None,
    ) -> GenerationResult:
        """See ``Client.generate``."""
        request = build_request(
            prompt=prompt,
            chat=chat,
            fim=fim,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            algorithm=algorithm,
            lookahead=lookahead,
            lookahead_k=lookahead_k,
            confidence_threshold=confidence_threshold,
            ignore_eos=ignore_eos,
            request_id=request_id,
            scheduler=scheduler,
        )
        budget = self._budget(timeout)
        while True:
            try:
                response = await self._stub.Generate(
                    request, timeout=budget.attempt_timeout(), metadata=self._metadata
                )
            except grpc.RpcError as exc:
                error = error_from_rpc(exc)
                delay = budget.backoff(error, accepted=accepted_by_server(exc))
                if delay is None:
                    raise error from None
                await self._sleep(delay)
            else:
                return result_from_proto(response)

    def generate_stream(
        self,
        prompt: str | None = None,
        *,
        chat: Sequence[ChatInput] | None = None,
        fim: tuple[str, str] | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        algorithm: AlgorithmName | str = "auto",
        lookahead: LookaheadSpec = None,
        lookahead_k: int | None = None,
        confidence_threshold: float | None = None,
        ignore_eos: bool = False,
        request_id: str | None = None,
        scheduler: SchedulerName | str | None = None,
        timeout: float | None = None,
    ) -> AsyncGenerationStream:
        """See ``Client.generate_stream``; iterate with ``async for``."""
        request = build_request(
            prompt=prompt,
            chat=chat,
            fim=fim,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            algorithm=algorithm,
            lookahead=lookahead,
            lookahead_k=lookahead_k,
            confidence_threshold=confidence_threshold,
            ignore_eos=ignore_eos,
            request_id=request_id,
            scheduler=scheduler,
        )
        stream_request = coordinator_pb2.GenerateStreamRequest(request=request)

        def start(attempt_timeout: float | None) -> AsyncIterable[coordinator_pb2.GenerateStreamResponse]:
            return self._stub.GenerateStream(stream_request, timeout=attempt_timeout, metadata=self._metadata)

        return AsyncGenerationStream(start, self._budget(timeout), self._sleep)


async def _stream_accepted(call: object) -> bool:
    """Whether a failed asyncio stream had received the accepted header.

    A status that follows the headers at once may reach the error before the headers do; the call's own
    initial metadata holds them once they arrived.
    """
    initial_metadata = getattr(call, "initial_metadata", None)
    if not callable(initial_metadata):
        return False
    try:
        metadata = await initial_metadata()
    except Exception:  # a call that cannot report its headers: treat as not accepted
        return False
    return any(key == ACCEPTED_HEADER for key, _ in metadata or ())
