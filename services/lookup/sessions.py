"""Per-sequence lookup state: the index of a sequence's context and the tokens the protocol says it holds.

A session keeps, for one sequence id, the index of its context (``core.lookup``) and the tokens held in
the context-delta protocol's sense (context and draft tokens of its last Draft), so a request's
``cached_prefix_len`` and checksum are checked exactly as the model service checks them. Only the
context is indexed, never draft tokens: the coordinator's next context extends the last one, so the
index is appended to; a context that does not extend it (another text under the same id) is indexed
afresh.

``prepare`` and ``commit`` run on the worker thread; ``release`` and ``expire_idle`` may run on any
thread (the server runs them on its event loop). A lock guards the bookkeeping; indexes are changed only
by the worker thread. A session that ends (released, idle past the TTL, or the least recently used one
over the token budget) is handed to ``on_end`` with the reason; it is no longer changed after that.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from core.errors import ResourceExhaustedError


class ContextIndex(Protocol):
    """What a session indexes its context with (``core.lookup.NgramIndex``, ``SuffixIndex``)."""

    tokens: list[int]

    def extend(self, tokens: Iterable[int]) -> None: ...


@dataclass
class LookupSession:
    sequence_id: str
    index: ContextIndex
    held: list[int]  # context + draft tokens of the last Draft (the protocol's cached tokens)
    first_context_len: int  # the context of the first Draft; what came after it is the generated text
    last_used: float

    @property
    def generated(self) -> list[int]:
        """The tokens the context gained after the first Draft (the sequence's output, as seen here)."""
        return self.index.tokens[self.first_context_len :]


class LookupSessions:
    """Sessions by sequence id, within a budget of indexed tokens, dropped after an idle TTL."""

    def __init__(
        self,
        *,
        budget_tokens: int,
        ttl_seconds: float,
        new_index: Callable[[], ContextIndex],
        on_end: Callable[[LookupSession, str], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._budget = budget_tokens
        self._ttl = ttl_seconds
        self._new_index = new_index
        self._on_end = on_end
        self._clock = clock
        self._sessions: OrderedDict[str, LookupSession] = OrderedDict()
        self._lock = threading.Lock()
        self._total = 0

    @property
    def session_count(self) -> int:
        return len(self._sessions)

    @property
    def total_tokens(self) -> int:
        """Context tokens indexed over all held sessions."""
        return self._total

    def held_tokens(self, sequence_id: str) -> list[int] | None:
        with self._lock:
            session = self._sessions.get(sequence_id)
            return None if session is None else session.held  # replaced, never mutated in place

    def prepare(self, sequence_id: str, context: Sequence[int]) -> tuple[LookupSession, int]:
        """The sequence's session with its index synced to ``context``, and how many context tokens were
        already indexed (reused). A context longer than the whole budget raises ``ResourceExhaustedError``."""
        if len(context) > self._budget:
            self.release([sequence_id])
            raise ResourceExhaustedError(
                f"sequence {sequence_id!r}: a context of {len(context)} tokens exceeds the drafter's budget "
                f"of {self._budget} indexed tokens"
            )
        with self._lock:
            session = self._sessions.get(sequence_id)
            if session is None:
                session = LookupSession(sequence_id, self._new_index(), [], len(context), self._clock())
                self._sessions[sequence_id] = session
            self._sessions.move_to_end(sequence_id)
            session.last_used = self._clock()
            before = len(session.index.tokens)
        indexed = session.index.tokens
        if len(indexed) <= len(context) and list(context[: len(indexed)]) == indexed:
            reused = len(indexed)
        else:  # another text under this id: index it afresh
            session.index, session.first_context_len, reused = self._new_index(), len(context), 0
        session.index.extend(context[reused:])
        with self._lock:
            if self._sessions.get(sequence_id) is session:
                self._total += len(session.index.tokens) - before
        return session, reused

    def commit(self, session: LookupSession, held: Sequence[int]) -> None:
        """Records the held tokens after a Draft; evicts others over the budget (a released session keeps
        nothing)."""
        ended: list[tuple[LookupSession, str]] = []
        with self._lock:
            session.held = list(held)
            session.last_used = self._clock()
            if self._sessions.get(session.sequence_id) is not session:
                return
            for sequence_id in list(self._sessions):  # least recently used first; never the caller's
                if self._total <= self._budget:
                    break
                if sequence_id != session.sequence_id:
                    ended.append((self._drop(sequence_id), "lru"))
        self._end(ended)

    def release(self, sequence_ids: Iterable[str]) -> int:
        """Drops the named sequences; returns how many were held. Thread-safe."""
        with self._lock:
            ended = [(self._drop(s), "released") for s in set(sequence_ids) if s in self._sessions]
        self._end(ended)
        return len(ended)

    def expire_idle(self) -> int:
        """Drops sessions idle for longer than the TTL; returns how many. Thread-safe."""
        with self._lock:
            deadline = self._clock() - self._ttl
            idle = [s for s, session in self._sessions.items() if session.last_used < deadline]
            ended = [(self._drop(s), "ttl") for s in idle]
        self._end(ended)
        return len(ended)

    def _drop(self, sequence_id: str) -> LookupSession:
        session = self._sessions.pop(sequence_id)
        self._total -= len(session.index.tokens)
        return session

    def _end(self, ended: list[tuple[LookupSession, str]]) -> None:
        for session, reason in ended:
            self._on_end(session, reason)
