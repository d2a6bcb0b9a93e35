"""Deadline and retry bookkeeping shared by the blocking and the asyncio client.

Two failures are retried, a bounded number of times (``max_retries``, both together), and never past the
call's deadline:

- ``UNAVAILABLE``, with exponential backoff and full jitter drawn from an injected ``random.Random``;
- ``RESOURCE_EXHAUSTED`` carrying a retry hint (``google.rpc.RetryInfo``: a coordinator at capacity
  refused the request at admission), after the hinted delay stretched by up to ``hint_jitter`` (so
  refused clients do not come back all at once). A hint over ``max_hint_seconds`` or past the deadline
  is not waited for: the error is raised at once. RESOURCE_EXHAUSTED without a hint (a message over the
  size cap) is never retried.

A request is never silently run twice. A polyspec coordinator sends the response header
``polyspec-accepted: 1`` as soon as its handler starts on a request, before any work. So:

- A failure **without** that header came before the coordinator accepted the request: the connection
  could not be made or broke before the handler ran, or the server was draining and refused new calls.
  No token was generated; UNAVAILABLE is retried. A coordinator sends the header only once it admitted
  the request, so its admission refusal lacks it.
- A failure **with** that header came after: the connection was cut mid-generation, the connection-age
  limit cut it, or the coordinator answered UNAVAILABLE because a model service behind it was. The
  SDK cannot know how much of the generation ran, so it raises ``UnavailableError`` and never re-sends
  (retry yourself if re-running the request is acceptable).
- A stream is additionally never retried once a message (the first tokens) arrived: it raises.

A server that does not send the header (a coordinator older than this SDK) gets the old behaviour:
UNAVAILABLE is retried until a stream's first message.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from polyspec.errors import DeadlineExceededError, PolyspecError, ResourceExhaustedError, UnavailableError

# The response header a coordinator sends once its handler accepted a request (the server side is
# ``core.serving.interceptor.ACCEPTED_METADATA`` in the polyspec server package).
ACCEPTED_HEADER = "polyspec-accepted"


def accepted_by_server(error: object) -> bool:
    """Whether a failed call (sync ``grpc.RpcError`` or ``grpc.aio.AioRpcError``) carries the header.

    A status that follows the headers at once may travel as a trailers-only response, with the header
    among the trailers: both are read.
    """
    return any(_has_header(getattr(error, name, None)) for name in ("initial_metadata", "trailing_metadata"))


def _has_header(read: object) -> bool:
    if not callable(read):
        return False
    try:
        metadata: Iterable[tuple[str, str | bytes]] | None = read()
    except Exception:  # a call object that cannot report its metadata: treat as not accepted
        return False
    return any(key == ACCEPTED_HEADER for key, _ in metadata or ())


@dataclass(frozen=True)
class RetryPolicy:
    """Retry limits and backoff.

    After UNAVAILABLE, the delay before retry ``n`` (0-based) is uniform in
    ``[0, min(max_backoff, initial * multiplier**n)]``. After a refusal with a retry hint of ``h``
    seconds, it is uniform in ``[h, h * (1 + hint_jitter)]``; a hint over ``max_hint_seconds`` is not
    waited for.
    """

    max_retries: int = 3
    initial_backoff_seconds: float = 0.1
    max_backoff_seconds: float = 2.0
    multiplier: float = 2.0
    hint_jitter: float = 0.5
    max_hint_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries: must be >= 0, got {self.max_retries}")
        if self.initial_backoff_seconds < 0 or self.max_backoff_seconds < 0:
            raise ValueError("backoff: must be >= 0 seconds")
        if self.multiplier < 1:
            raise ValueError(f"multiplier: must be >= 1, got {self.multiplier}")
        if self.hint_jitter < 0 or self.max_hint_seconds < 0:
            raise ValueError("hint_jitter and max_hint_seconds: must be >= 0")

    def backoff_cap(self, retry: int) -> float:
        """The largest delay before retry number ``retry`` (0-based)."""
        return float(min(self.max_backoff_seconds, self.initial_backoff_seconds * self.multiplier**retry))


class CallBudget:
    """The deadline and retries of one call (all its attempts together)."""

    def __init__(
        self,
        policy: RetryPolicy,
        rng: random.Random,
        clock: Callable[[], float],
        timeout: float | None,
    ) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError(f"timeout: must be > 0 seconds, got {timeout}")
        self._policy = policy
        self._rng = rng
        self._clock = clock
        self._deadline = None if timeout is None else clock() + timeout
        self.retries = 0

    def attempt_timeout(self) -> float | None:
        """The gRPC timeout of the next attempt: the time left to the deadline (None: no deadline)."""
        if self._deadline is None:
            return None
        remaining = self._deadline - self._clock()
        if remaining <= 0:
            raise DeadlineExceededError("the call's deadline passed before the request could be sent")
        return remaining

    def backoff(self, error: PolyspecError, *, accepted: bool = False) -> float | None:
        """The delay before retrying after ``error``, or None when ``error`` must be raised.

        ``accepted``: the server had accepted the request (``accepted_by_server``); never retried.
        """
        if accepted or self.retries >= self._policy.max_retries:
            return None
        delay = self._delay(error)
        if delay is None or (self._deadline is not None and self._clock() + delay >= self._deadline):
            return None
        self.retries += 1
        return delay

    def _delay(self, error: PolyspecError) -> float | None:
        """The wait a retriable ``error`` calls for (None: not retriable)."""
        policy = self._policy
        if isinstance(error, UnavailableError):
            return self._rng.uniform(0.0, policy.backoff_cap(self.retries))
        hint = error.retry_after_seconds
        if isinstance(error, ResourceExhaustedError) and hint is not None and hint <= policy.max_hint_seconds:
            return self._rng.uniform(hint, hint * (1.0 + policy.hint_jitter))
        return None
