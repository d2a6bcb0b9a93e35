"""KV cache manager: one transformers ``Cache`` per sequence, prefix reuse, crop, LRU and TTL eviction.

A session holds the tokens the server keeps for a sequence (the context and the draft or candidate
tokens of its last call) and the keys/values of a leading part of them. A new call reuses the longest
common prefix of that part with its context, crops the rest away and feeds only the remaining tokens.

``prepare`` and ``commit`` run on the model worker thread, around the forward. ``release`` and
``expire_idle`` are housekeeping and may run on any thread (the server runs them on its event loop, so
they never wait behind forwards): a lock keeps the bookkeeping consistent, and a session dropped while
a forward still uses it stays the forward's own object (its ``commit`` then keeps nothing). The byte
and session counts may be read from any thread.
"""

from __future__ import annotations

import enum
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
from transformers import Cache

from core.errors import ResourceExhaustedError


class EvictionReason(enum.Enum):
    """Why a session left the cache without being released."""

    LRU = "lru"
    TTL = "ttl"
    OVER_BUDGET = "over_budget"


@dataclass
class CacheSession:
    """One sequence's cache. Invariant: ``kv`` holds the keys/values of ``tokens[:kv_len]``."""

    sequence_id: str
    kv: Cache
    tokens: list[int]
    kv_len: int
    nbytes: int
    last_used: float


@dataclass(frozen=True)
class PreparedContext:
    """A session cropped to the reusable prefix of a context and the tokens still to feed."""

    session: CacheSession
    reused_tokens: int
    feed_tokens: list[int]


def kv_nbytes(kv: Cache) -> int:
    """Bytes of the key/value tensors held by a cache."""
    total = 0
    for layer in kv.layers:
        for name in ("keys", "values"):
            tensor = getattr(layer, name, None)
            if isinstance(tensor, torch.Tensor):
                total += tensor.numel() * tensor.element_size()
    return total


def can_crop(kv: Cache, tokens_to_remove: int) -> bool:
    """Whether ``kv.crop(-tokens_to_remove)`` restores exactly the shorter prefix.

    Sliding-window layers keep only ``sliding_window - 1`` past positions plus what was fed since
    their last crop; layers that are not croppable (recurrent state) cannot go back at all.
    """
    for layer in kv.layers:
        if tokens_to_remove > 0 and not getattr(layer, "is_croppable", True):
            return False
        window = getattr(layer, "sliding_window", None)
        cumulative = getattr(layer, "cumulative_length", None)
        keys = getattr(layer, "keys", None)
        if window is None or cumulative is None or not isinstance(keys, torch.Tensor):
            continue
        if cumulative >= window:
            needed = min(window - 1, cumulative - tokens_to_remove) + tokens_to_remove
            if keys.shape[-2] < needed:
                return False
    return True


def common_prefix_len(left: Sequence[int], right: Sequence[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    limit = min(len(left), len(right))
    for index in range(limit):
        if left[index] != right[index]:
            return index
    return limit


class KvCacheManager:
    """Sessions keyed by sequence id, within a byte budget, dropped after an idle TTL."""

    def __init__(
        self,
        *,
        budget_bytes: int,
        ttl_seconds: float,
        bytes_per_token: int,
        new_cache: Callable[[], Cache],
        clock: Callable[[], float] = time.monotonic,
        on_evict: Callable[[str, EvictionReason], None] | None = None,
    ) -> None:
        if budget_bytes < 1 or ttl_seconds <= 0 or bytes_per_token < 1:
            raise ValueError("budget_bytes, ttl_seconds and bytes_per_token must be positive")
        self._budget = budget_bytes
        self._ttl = ttl_seconds
        self._bytes_per_token = bytes_per_token
        self._new_cache = new_cache
        self._clock = clock
        self._on_evict = on_evict
        self._sessions: OrderedDict[str, CacheSession] = OrderedDict()
        self._total_bytes = 0
        self._lock = threading.Lock()  # guards _sessions and _total_bytes

    @property
    def total_bytes(self) -> int:
        """Bytes of all cached keys/values."""
        return self._total_bytes

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    @property
    def budget_bytes(self) -> int:
        return self._budget

    def held_tokens(self, sequence_id: str) -> list[int] | None:
        """The tokens held for a sequence (context and draft/candidate tokens of its last call)."""
        with self._lock:
            session = self._sessions.get(sequence_id)
            return None if session is None else session.tokens  # replaced, never mutated in place

    def prepare(
        self, sequence_id: str, context: Sequence[int], *, max_reuse: int, final_tokens: int
    ) -> PreparedContext:
        """Crops a sequence's cache to the longest reusable prefix of ``context`` (at most ``max_reuse``).

        ``final_tokens`` is how many tokens the cache will hold after the call; other sessions are
        evicted (least recently used first) to make room. Raises ``ResourceExhaustedError`` (and drops
        the sequence) when it cannot fit in the budget on its own.
        """
        if not 0 <= max_reuse < len(context):
            raise ValueError("max_reuse must leave at least one context token to feed")
        with self._lock:
            return self._prepare(sequence_id, context, max_reuse, final_tokens)

    def _prepare(
        self, sequence_id: str, context: Sequence[int], max_reuse: int, final_tokens: int
    ) -> PreparedContext:
        session = self._session_for(sequence_id)
        reuse = min(common_prefix_len(session.tokens[: session.kv_len], context), max_reuse)
        if reuse > 0 and can_crop(session.kv, session.kv_len - reuse):
            session.kv.crop(-(session.kv_len - reuse))
        else:
            session.kv = self._new_cache()
            reuse = 0
        session.tokens = list(context)
        session.kv_len = reuse
        self._account(session)
        projected = session.nbytes + max(final_tokens - reuse, 0) * self._bytes_per_token
        if projected > self._budget:
            self._evict(sequence_id, EvictionReason.OVER_BUDGET)
            raise ResourceExhaustedError(
                f"sequence {sequence_id!r} needs about {projected} bytes of KV cache; "
                f"the budget is {self._budget} bytes"
            )
        self._evict_lru(keep=sequence_id, needed=projected)
        return PreparedContext(session, reuse, list(context[reuse:]))

    def commit(self, session: CacheSession, tokens: Sequence[int], kv_len: int) -> None:
        """Records what a session holds after a call and enforces the budget.

        A session released (or evicted) while its forward ran is no longer held: nothing is kept.
        """
        with self._lock:
            session.tokens = list(tokens)
            session.kv_len = kv_len
            session.last_used = self._clock()
            self._account(session)
            if self._holds(session):
                self._evict_lru(keep=session.sequence_id, needed=session.nbytes)
                if session.nbytes > self._budget:
                    self._evict(session.sequence_id, EvictionReason.OVER_BUDGET)

    def release(self, sequence_ids: Iterable[str]) -> int:
        """Drops the named sequences; returns how many were cached. Thread-safe."""
        with self._lock:
            return sum(1 for sequence_id in set(sequence_ids) if self._drop(sequence_id))

    def expire_idle(self) -> int:
        """Drops sessions idle for longer than the TTL; returns how many. Thread-safe."""
        with self._lock:
            deadline = self._clock() - self._ttl
            expired = [sid for sid, session in self._sessions.items() if session.last_used < deadline]
            for sequence_id in expired:
                self._evict(sequence_id, EvictionReason.TTL)
            return len(expired)

    def _holds(self, session: CacheSession) -> bool:
        """Whether ``session`` itself (not a later one of the same sequence) is held."""
        return self._sessions.get(session.sequence_id) is session

    def _session_for(self, sequence_id: str) -> CacheSession:
        session = self._sessions.get(sequence_id)
        if session is None:
            session = CacheSession(sequence_id, self._new_cache(), [], 0, 0, self._clock())
            self._sessions[sequence_id] = session
        self._sessions.move_to_end(sequence_id)
        session.last_used = self._clock()
        return session

    def _account(self, session: CacheSession) -> None:
        nbytes = kv_nbytes(session.kv)
        if self._holds(session):
            self._total_bytes += nbytes - session.nbytes
        session.nbytes = nbytes

    def _evict_lru(self, keep: str, needed: int) -> None:
        others = self._total_bytes - self._sessions[keep].nbytes
        for sequence_id in list(self._sessions):
            if others + needed <= self._budget:
                return
            if sequence_id != keep:
                others -= self._sessions[sequence_id].nbytes
                self._evict(sequence_id, EvictionReason.LRU)

    def _evict(self, sequence_id: str, reason: EvictionReason) -> None:
        if self._drop(sequence_id) and self._on_evict is not None:
            self._on_evict(sequence_id, reason)

    def _drop(self, sequence_id: str) -> bool:
        session = self._sessions.pop(sequence_id, None)
        if session is None:
            return False
        self._total_bytes -= session.nbytes
        return True
