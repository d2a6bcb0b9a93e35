"""A live pool of replicas of one model service, and the dispatch helper that survives replica failures.

``update`` adds and removes replicas while requests run (fed by configuration or discovery). ``call``
runs one model-service call on the least busy replica and re-dispatches it to another replica when the
first is unavailable, over capacity, or was removed under it. A call is re-run whole, never resumed,
and its result is returned exactly once: Draft and Score are deterministic in (context, seed), so a
re-dispatched call yields the same tokens and no output is lost or duplicated. A replica added later
is checked against the pool's tokenizer fingerprint before its first call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import structlog

from coordinator.clients import ModelServiceClient
from core.errors import PolyspecError, ResourceExhaustedError, UnavailableError

log = structlog.get_logger(__name__)

T = TypeVar("T")

# A replica that failed this recently is tried after the others.
FAILURE_COOLDOWN_SECONDS = 5.0


@dataclass(eq=False)
class Replica:
    """One replica: its client and what the pool knows about it."""

    client: ModelServiceClient
    verified: bool = False
    in_flight: int = 0
    removed: bool = False
    quarantined: bool = False
    failed_at: float | None = None
    closing: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return self.client.address


class ReplicaPool:
    """The replicas of one role ("target" or "drafter")."""

    def __init__(
        self,
        role: str,
        addresses: Iterable[str],
        make_client: Callable[[str], ModelServiceClient],
        *,
        info_timeout_seconds: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.role = role
        self._make_client = make_client
        self._info_timeout = info_timeout_seconds
        self._clock = clock
        self._replicas: dict[str, Replica] = {}
        self._retiring: set[Replica] = set()
        self.expected_fingerprint: str | None = None
        self.update(addresses)

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(self._replicas)

    def replica(self, address: str) -> Replica:
        return self._replicas[address]

    def client(self, address: str | None) -> ModelServiceClient | None:
        """The client of a replica still in the pool (None: no such replica)."""
        replica = self._replicas.get(address) if address is not None else None
        return None if replica is None else replica.client

    def mark_verified(self, address: str) -> None:
        """Records that a replica's Info matched (done by start-up for the replicas it checked)."""
        self._replicas[address].verified = True

    def update(self, addresses: Iterable[str]) -> None:
        """Makes the pool's replicas exactly ``addresses``; removed ones close once their calls finish."""
        wanted = list(dict.fromkeys(addresses))
        for address in wanted:
            if address not in self._replicas:
                self._replicas[address] = Replica(self._make_client(address))
                log.info("replica_added", role=self.role, address=address)
        for address in [a for a in self._replicas if a not in wanted]:
            replica = self._replicas.pop(address)
            replica.removed = True
            self._retiring.add(replica)
            log.info("replica_removed", role=self.role, address=address, in_flight=replica.in_flight)
            self._close_if_idle(replica)

    def pick(self, exclude: Sequence[str] = (), prefer: str | None = None) -> Replica | None:
        """The least busy usable replica not in ``exclude``; recent failures last, ``prefer`` wins ties."""
        now = self._clock()
        candidates = [r for r in self._replicas.values() if r.address not in exclude and not r.quarantined]
        if not candidates:
            return None

        def key(replica: Replica) -> tuple[bool, int, bool]:
            recently_failed = (
                replica.failed_at is not None and now - replica.failed_at < FAILURE_COOLDOWN_SECONDS
            )
            return recently_failed, replica.in_flight, replica.address != prefer

        return min(candidates, key=key)

    async def call(
        self,
        fn: Callable[[ModelServiceClient], Awaitable[T]],
        *,
        prefer: str | None = None,
    ) -> tuple[T, str]:
        """Runs ``fn`` on one replica, re-dispatching on failure; returns its result and the replica used.

        Raises the last replica's error when every replica failed, or ``UnavailableError`` when the pool
        has no usable replica.
        """
        tried: list[str] = []
        last_error: PolyspecError | None = None
        while (replica := self.pick(exclude=tried, prefer=prefer)) is not None:
            tried.append(replica.address)
            try:
                return await self._call_on(replica, fn), replica.address
            except (UnavailableError, ResourceExhaustedError) as exc:
                replica.failed_at = self._clock()
                last_error = exc
                log.warning("replica_failed", role=self.role, address=replica.address, error=exc.message)
        if last_error is not None:
            raise last_error
        raise UnavailableError(f"{self.role}: no usable replica (addresses: {', '.join(self.addresses)})")

    async def _call_on(self, replica: Replica, fn: Callable[[ModelServiceClient], Awaitable[T]]) -> T:
        replica.in_flight += 1
        try:
            if not replica.verified:
                await self._verify(replica)
            result = await fn(replica.client)
        except PolyspecError as exc:
            if replica.removed and not isinstance(exc, UnavailableError | ResourceExhaustedError):
                raise UnavailableError(f"{replica.client.name} was removed: {exc.message}") from exc
            raise
        finally:
            replica.in_flight -= 1
            self._close_if_idle(replica)
        replica.failed_at = None
        return result

    async def _verify(self, replica: Replica) -> None:
        """Checks a new replica's tokenizer against the pool's before its first call."""
        info = await replica.client.info(timeout=self._info_timeout)
        fingerprint = info.tokenizer_fingerprint.lower()
        if self.expected_fingerprint is not None and fingerprint != self.expected_fingerprint:
            replica.quarantined = True
            log.error(
                "replica_tokenizer_mismatch",
                role=self.role,
                address=replica.address,
                fingerprint=fingerprint,
                expected=self.expected_fingerprint,
            )
            raise UnavailableError(f"{replica.client.name} runs another tokenizer ({fingerprint})")
        replica.verified = True

    def _close_if_idle(self, replica: Replica) -> None:
        if replica.removed and replica.in_flight == 0 and replica.closing is None:
            replica.closing = asyncio.ensure_future(replica.client.close())
            replica.closing.add_done_callback(lambda _: self._retiring.discard(replica))

    async def release(self, sequence_ids: Sequence[str], timeout: float) -> None:
        """Frees the sequences on every open replica that was sent a call for them (errors are logged)."""
        holders = [
            r.client
            for r in (*self._replicas.values(), *self._retiring)
            if r.closing is None and any(r.client.holds(s) for s in sequence_ids)
        ]
        results = await asyncio.gather(
            *(client.release(sequence_ids, timeout=timeout) for client in holders), return_exceptions=True
        )
        for client, result in zip(holders, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("release_failed", service=client.name, error=str(result))

    async def close(self) -> None:
        """Closes every channel (the pool is unusable afterwards)."""
        self.update(())
        for replica in list(self._retiring):
            if replica.closing is None:
                replica.closing = asyncio.ensure_future(replica.client.close())
        closing = [r.closing for r in list(self._retiring) if r.closing is not None]
        await asyncio.gather(*closing, return_exceptions=True)
