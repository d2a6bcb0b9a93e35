"""A live pool of replicas of one model service, and the dispatch that survives failed and hung replicas.

``update`` adds and removes replicas while requests run (fed by configuration or discovery). ``call``
runs one model-service call on the least busy usable replica and re-sends it to another replica when
the first is unavailable, over capacity, too slow, or was removed under it. A call is re-run whole,
never resumed, and its result is returned exactly once: Draft and Score are deterministic in (context,
seed), so a re-sent call yields the same tokens and no output is lost or duplicated. A replica added
later is checked against the pool's tokenizer fingerprint before its first call.

What keeps a request alive:
- Capacity: a replica's Info reports how many calls it holds at once (``max_queue``); the pool never
  has more in flight on it, and a call waits for a free slot instead of being refused by a full queue.
- Per-call timeouts from the measured cost (``coordinator.callcost``): a hung replica costs a call a
  few expected forward times, not a fixed minute; the call then goes to another replica.
- Outlier ejection: a replica that fails ``eject_after_failures`` calls in a row (timeouts or
  unavailability) is ejected: no call is sent to it while a probe (Info, which the model service
  answers on its event loop, never behind forwards) checks it every ``probe_interval_seconds`` after
  an ejection time that doubles with each re-ejection of a flapping replica. A probe that answers
  lets it back at once, so a restarted replica serves again within seconds.
- Persistence (the target pool): when every replica failed a call, the call backs off and tries
  again until the request's deadline or ``retry_seconds``, ejected replicas included when no other
  is left; only then does the request fail. The drafter pool makes one pass (``persistent=False``):
  drafting is optional, and a pool whose replicas are all ejected is a tripped circuit breaker
  (``usable()`` is false): requests decode target-only at once until a probe lets a drafter back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import structlog

from coordinator.callcost import CallCosts, CallWork, TimeoutRule
from coordinator.clients import Deadline, ModelServiceClient
from core.errors import DeadlineExceededError, PolyspecError, ResourceExhaustedError, UnavailableError

log = structlog.get_logger(__name__)

T = TypeVar("T")

# A replica that failed this recently is tried after the others.
FAILURE_COOLDOWN_SECONDS = 5.0
# Back-off between passes over the replicas of a persistent pool (doubling up to the maximum).
RETRY_BACKOFF_SECONDS = 0.05
MAX_RETRY_BACKOFF_SECONDS = 1.0


@dataclass(frozen=True)
class ReplicaPolicy:
    """How a pool times calls out, ejects failing replicas and probes them back."""

    timeouts: TimeoutRule = field(default_factory=TimeoutRule)
    eject_after_failures: int = 2  # consecutive timeouts or unavailability
    ejection_seconds: float = 2.0  # the first ejection; doubles with each re-ejection
    max_ejection_seconds: float = 60.0
    probe_interval_seconds: float = 1.0
    probe_timeout_seconds: float = 2.0
    persistent: bool = True  # keep trying (back-off) until the deadline or retry_seconds
    retry_seconds: float = 60.0


@dataclass(eq=False)
class Replica:
    """One replica: its client and what the pool knows about it."""

    client: ModelServiceClient
    verified: bool = False
    in_flight: int = 0
    capacity: int = 0  # calls it holds at once (its Info's max_queue); 0 = unknown, unbounded
    removed: bool = False
    quarantined: bool = False
    failed_at: float | None = None
    consecutive_failures: int = 0
    ejected: bool = False
    ejections: int = 0  # ejections since it last served well for a while
    reinstated_at: float | None = None
    probe: asyncio.Task[None] | None = field(default=None, repr=False)
    closing: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return self.client.address

    @property
    def full(self) -> bool:
        return self.capacity > 0 and self.in_flight >= self.capacity


class ReplicaPool:
    """The replicas of one role ("target" or "drafter")."""

    def __init__(
        self,
        role: str,
        addresses: Iterable[str],
        make_client: Callable[[str], ModelServiceClient],
        *,
        info_timeout_seconds: float = 10.0,
        policy: ReplicaPolicy | None = None,
        on_event: Callable[[str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.role = role
        self._make_client = make_client
        self._info_timeout = info_timeout_seconds
        self.policy = policy or ReplicaPolicy()
        self.costs = CallCosts(self.policy.timeouts)
        self._clock = clock
        self._on_event = on_event  # (role, event): timeout, resent, waited, ejected, reinstated
        self._replicas: dict[str, Replica] = {}
        self._retiring: set[Replica] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._freed = asyncio.Event()  # set whenever a call ends (a slot may be free)
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

    def mark_verified(self, address: str, capacity: int = 0) -> None:
        """Records that a replica's Info matched (done by start-up for the replicas it checked)."""
        replica = self._replicas[address]
        replica.verified = True
        replica.capacity = max(0, capacity)

    def usable_addresses(self) -> tuple[str, ...]:
        """The replicas that may take a call now (not ejected, not quarantined)."""
        return tuple(a for a, r in self._replicas.items() if not r.ejected and not r.quarantined)

    def usable(self) -> bool:
        """Whether some replica may take a call now (false: all ejected or quarantined, or none)."""
        return any(not r.ejected and not r.quarantined for r in self._replicas.values())

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
            if replica.probe is not None:
                replica.probe.cancel()
            self._retiring.add(replica)
            log.info("replica_removed", role=self.role, address=address, in_flight=replica.in_flight)
            self._close_if_idle(replica)

    def pick(self, exclude: Sequence[str] = (), prefer: str | None = None) -> Replica | None:
        """The least busy replica with a free slot not in ``exclude``; recent failures last, ``prefer``
        wins ties. Ejected replicas only when every replica of a persistent pool is ejected."""
        now = self._clock()
        candidates = [r for r in self._replicas.values() if r.address not in exclude and not r.quarantined]
        healthy = [r for r in candidates if not r.ejected]
        if not healthy and (not self.policy.persistent or self.usable()):
            return None
        open_ = [r for r in healthy or candidates if not r.full]
        if not open_:
            return None

        def key(replica: Replica) -> tuple[bool, int, bool]:
            recently_failed = (
                replica.failed_at is not None and now - replica.failed_at < FAILURE_COOLDOWN_SECONDS
            )
            return recently_failed, replica.in_flight, replica.address != prefer

        return min(open_, key=key)

    def _only_avoided(self, tried: Sequence[str], excluded: Sequence[str]) -> bool:
        """Whether a replica left for this call is only avoided for now (worth waiting for)."""
        return len(excluded) > len(tried) and self.pick(exclude=tried) is not None

    def _all_full(self, exclude: Sequence[str]) -> bool:
        """Whether the only replicas left for this call are busy at capacity (worth waiting for)."""
        left = [r for r in self._replicas.values() if r.address not in exclude and not r.quarantined]
        healthy = [r for r in left if not r.ejected] or left
        return bool(healthy) and all(r.full for r in healthy)

    async def call(
        self,
        fn: Callable[[ModelServiceClient, float], Awaitable[T]],
        *,
        prefer: str | None = None,
        work: Callable[[ModelServiceClient], CallWork] | None = None,
        deadline: Deadline | None = None,
        avoid: Callable[[], Collection[str]] | None = None,
    ) -> tuple[T, str]:
        """Runs ``fn(client, timeout)`` on one replica, re-sending on failure; returns its result and the
        replica used. ``work`` prices the call on a replica (its timeout follows); ``deadline`` is the
        request's; ``avoid()`` names replicas not to send it to now (busy with the same request's other
        calls: asked again before every try, so a re-send waits for one of them to free up).

        Raises the last replica's error when the replicas failed for good (a persistent pool: past the
        deadline or ``retry_seconds``), or ``UnavailableError`` when the pool has no usable replica.
        """
        deadline = deadline or Deadline(None, self._clock)
        give_up_at = self._clock() + self.policy.retry_seconds
        tried: list[str] = []
        last_error: PolyspecError | None = None
        backoff = RETRY_BACKOFF_SECONDS
        while True:
            excluded = tried if avoid is None else [*tried, *avoid()]
            replica = self.pick(exclude=excluded, prefer=prefer)
            if replica is None and (self._all_full(excluded) or self._only_avoided(tried, excluded)):
                self._event("waited")
                await self._wait_for_a_slot(deadline)
                continue
            if replica is None:
                if not self._retry(last_error, deadline, give_up_at, backoff):
                    break
                await asyncio.sleep(backoff)
                backoff, tried = min(2 * backoff, MAX_RETRY_BACKOFF_SECONDS), []
                continue
            if last_error is not None:
                self._event("resent")
            tried.append(replica.address)
            try:
                return await self._attempt(replica, fn, work, deadline), replica.address
            except (UnavailableError, ResourceExhaustedError, DeadlineExceededError) as exc:
                if isinstance(exc, DeadlineExceededError) and deadline.expired():
                    raise
                last_error = exc
                self._record_failure(replica, exc)
        if last_error is not None:
            raise last_error
        raise UnavailableError(f"{self.role}: no usable replica (addresses: {', '.join(self.addresses)})")

    def _retry(
        self, last_error: PolyspecError | None, deadline: Deadline, give_up_at: float, backoff: float
    ) -> bool:
        """Whether a persistent pool goes over its replicas again after a pass in which all failed."""
        if not self.policy.persistent or not self._replicas or last_error is None:
            return False
        remaining = deadline.remaining()
        if remaining is not None and remaining <= backoff:
            return False
        return self._clock() + backoff < give_up_at

    async def _wait_for_a_slot(self, deadline: Deadline) -> None:
        """Waits until a call ends somewhere (every candidate replica is at capacity)."""
        self._freed.clear()
        try:
            async with asyncio.timeout(deadline.remaining()):
                await self._freed.wait()
        except TimeoutError:
            raise DeadlineExceededError(
                f"the request's deadline passed while every {self.role} replica was at capacity"
            ) from None

    async def _attempt(
        self,
        replica: Replica,
        fn: Callable[[ModelServiceClient, float], Awaitable[T]],
        work: Callable[[ModelServiceClient], CallWork] | None,
        deadline: Deadline,
    ) -> T:
        """One try on one replica, under the timeout its expected cost and queue give."""
        replica.in_flight += 1
        try:
            priced = CallWork(1, 1) if work is None else work(replica.client)
            timeout = self.costs.timeout(priced, queued_ahead=replica.in_flight - 1)
            if not replica.verified:
                await self._verify(replica, deadline.call_timeout(min(timeout, self._info_timeout)))
            result = await fn(replica.client, deadline.call_timeout(timeout))
        except PolyspecError as exc:
            if replica.removed and not isinstance(exc, UnavailableError | ResourceExhaustedError):
                raise UnavailableError(f"{replica.client.name} was removed: {exc.message}") from exc
            raise
        finally:
            replica.in_flight -= 1
            self._freed.set()
            self._close_if_idle(replica)
        self._record_success(replica)
        return result

    def _record_success(self, replica: Replica) -> None:
        replica.failed_at = None
        replica.consecutive_failures = 0
        settled = self.policy.max_ejection_seconds
        if replica.reinstated_at is not None and self._clock() - replica.reinstated_at > settled:
            replica.ejections, replica.reinstated_at = 0, None  # served well for a while: forgiven

    def _record_failure(self, replica: Replica, error: PolyspecError) -> None:
        """A failed try: a cooldown; timeouts and unavailability in a row eject the replica."""
        replica.failed_at = self._clock()
        log.warning("replica_failed", role=self.role, address=replica.address, error=error.message)
        if isinstance(error, DeadlineExceededError):
            self._event("timeout")
        if isinstance(error, ResourceExhaustedError):
            return  # alive, only busy (another coordinator shares it)
        replica.consecutive_failures += 1
        if replica.consecutive_failures >= self.policy.eject_after_failures and not replica.ejected:
            self._eject(replica, error)

    def _event(self, event: str) -> None:
        if self._on_event is not None:
            self._on_event(self.role, event)

    def _eject(self, replica: Replica, error: PolyspecError) -> None:
        self._event("ejected")
        replica.ejected = True
        replica.ejections += 1
        seconds = min(
            self.policy.max_ejection_seconds, self.policy.ejection_seconds * 2 ** (replica.ejections - 1)
        )
        log.warning(
            "replica_ejected",
            role=self.role,
            address=replica.address,
            seconds=seconds,
            failures=replica.consecutive_failures,
            error=error.message,
        )
        if not replica.removed:
            replica.probe = asyncio.ensure_future(self._probe(replica, seconds))

    async def _probe(self, replica: Replica, wait: float) -> None:
        """Checks an ejected replica with Info until it answers, then lets it back."""
        await asyncio.sleep(wait)
        while not replica.removed:
            try:
                await replica.client.info(timeout=self.policy.probe_timeout_seconds)
            except (PolyspecError, RuntimeError):  # any failed answer keeps it out
                await asyncio.sleep(self.policy.probe_interval_seconds)
                continue
            replica.ejected, replica.consecutive_failures = False, 0
            replica.failed_at, replica.reinstated_at = None, self._clock()
            log.info("replica_reinstated", role=self.role, address=replica.address)
            self._event("reinstated")
            return

    async def _verify(self, replica: Replica, timeout: float) -> None:
        """Checks a new replica's tokenizer against the pool's before its first call."""
        info = await replica.client.info(timeout=timeout)
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
        replica.capacity = max(0, info.max_queue)

    def _close_if_idle(self, replica: Replica) -> None:
        if replica.removed and replica.in_flight == 0 and replica.closing is None:
            replica.closing = asyncio.ensure_future(replica.client.close())
            replica.closing.add_done_callback(lambda _: self._retiring.discard(replica))

    async def release(self, sequence_ids: Sequence[str], timeout: float) -> None:
        """Frees the sequences on every open replica that was sent a call for them (errors are logged).

        On an ejected replica, or one whose last call failed, the Release runs in the background: a hung
        replica must not hold up the end of a request for the Release timeout."""
        holders = [
            r
            for r in (*self._replicas.values(), *self._retiring)
            if r.closing is None and any(r.client.holds(s) for s in sequence_ids)
        ]
        doubtful = [r for r in holders if r.ejected or r.consecutive_failures > 0]
        for replica in doubtful:
            task = asyncio.ensure_future(self._release_on(replica.client, sequence_ids, timeout))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        await asyncio.gather(
            *(self._release_on(r.client, sequence_ids, timeout) for r in holders if r not in doubtful)
        )

    @staticmethod
    async def _release_on(client: ModelServiceClient, sequence_ids: Sequence[str], timeout: float) -> None:
        try:
            await client.release(sequence_ids, timeout=timeout)
        except (PolyspecError, RuntimeError) as exc:
            log.warning("release_failed", service=client.name, error=str(exc))

    async def close(self) -> None:
        """Closes every channel (the pool is unusable afterwards); background Releases get their timeout."""
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        self.update(())
        for replica in list(self._retiring):
            if replica.closing is None:
                replica.closing = asyncio.ensure_future(replica.client.close())
        closing = [r.closing for r in list(self._retiring) if r.closing is not None]
        await asyncio.gather(*closing, return_exceptions=True)
