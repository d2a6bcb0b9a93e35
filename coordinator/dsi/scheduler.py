"""The DSI scheduler of one request: the block chain driven by asyncio tasks over injectable calls.

One coroutine (``DsiScheduler.run``) owns every decision; the drafter's call and the target replicas'
calls run as tasks it starts, cancels and collects. Between two events it launches what may start
(``_launch``: a plain step, the next draft, verifications on free replicas), then applies the finished
results in position order (``_apply``), yielding each commit. The decisions themselves are the pure
functions of ``coordinator.dsi.chain`` and ``coordinator.loop.round``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncGenerator, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from coordinator.dsi.chain import (
    DraftedBlock,
    block_budget,
    block_commit,
    decided_margins,
    speculative_snapshot,
    usable_offset,
)
from coordinator.dsimodel import SchedulerKnobs
from coordinator.loop.round import (
    Committed,
    DrafterFailedError,
    candidates,
    commit,
    decide,
    draft_call,
    near_tie_offsets,
    next_view,
    score_call,
)
from coordinator.loop.snapshot import DrafterView, RoundSnapshot
from coordinator.loop.translate import EMPTY, UnusableDraftError
from core.modelcalls import DraftCall, DraftOutcome, ScoreCall, ScoreOutcome


class DsiCalls(Protocol):
    """The model-service calls the scheduler makes for one request."""

    def replicas(self) -> Sequence[str]:
        """The target replicas that may take a call now."""
        ...

    def uncached_tokens(self, replica: str, call: ScoreCall) -> int:
        """Tokens of the call's context the replica's cache lacks."""
        ...

    async def draft(self, call: DraftCall) -> DraftOutcome:
        """Raises ``DrafterFailedError`` when the drafter cannot draft."""
        ...

    async def score(
        self,
        call: ScoreCall,
        replica: str,
        busy: Callable[[], Collection[str]],
        on_replica: Callable[[str], None],
    ) -> ScoreOutcome:
        """One Score, on ``replica`` first; a re-send avoids the replicas in ``busy()``; ``on_replica``
        is told each replica the call is sent to."""
        ...


@dataclass
class DsiCounters:
    """What the scheduler did for the request."""

    rounds: int = 0  # blocks applied + plain steps applied
    draft_tokens: int = 0
    accepted_tokens: int = 0
    target_forwards: int = 0
    drafter_forwards: int = 0
    target_tokens_computed: int = 0  # every finished Score, discarded ones included
    verifications_preempted: int = 0  # Score calls cancelled or whose result was discarded
    drafts_preempted: int = 0
    plain_steps: int = 0
    bonus_discarded: int = 0  # fully accepted blocks whose bonus token the next block's draws replaced
    short_drafts: int = 0  # drafts that ended before the block size (a confidence stop, an end of sequence)
    call_queue_seconds: float = 0.0  # time finished drafts waited for a free target replica
    queue_waits: list[float] = field(default_factory=list)  # each verification's wait
    replicas_used: set[str] = field(default_factory=set)
    emulated_latency: bool = False


@dataclass(eq=False)
class _Block:
    snapshot: RoundSnapshot
    call: DraftCall | None = None
    draft_task: asyncio.Task[DraftOutcome] | None = None
    drafted: DraftedBlock | None = None
    ready_at: float = 0.0
    verify_task: asyncio.Task[ScoreOutcome] | None = None
    replica: str = ""
    scored: ScoreOutcome | None = None


@dataclass(eq=False)
class _Plain:
    snapshot: RoundSnapshot
    task: asyncio.Task[ScoreOutcome]
    replica: str
    scored: ScoreOutcome | None = None


@dataclass(frozen=True)
class DsiCommit:
    """One applied block or plain step: the tokens it committed, the drafter's view after them, and what
    decided them (the draft, its candidates and accepted count, the target's call)."""

    committed: Committed
    view: DrafterView | None
    scored: ScoreOutcome
    drafted: DraftOutcome | None = None
    candidates: int = 0
    accepted: int = 0
    near_ties: tuple[int, ...] = ()  # offsets into ``committed.tokens`` decided at a greedy near-tie


class DsiScheduler:
    """Runs one request's DSI block chain from ``start`` (the committed state) until it finishes."""

    def __init__(
        self,
        start: RoundSnapshot,
        calls: DsiCalls,
        knobs: SchedulerKnobs,
        *,
        threshold: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
        on_fallback: Callable[[str], None] | None = None,
    ) -> None:
        self._state = start
        self._calls = calls
        self._knobs = knobs
        self._threshold = threshold
        self._clock = clock
        self._on_fallback = on_fallback
        self._next_index = start.round_index
        self._chain: list[_Block] = []
        self._plain: _Plain | None = None
        self._busy: dict[str, int] = {}
        self._dying: set[asyncio.Task[Any]] = set()  # cancelled calls not yet ended (their replicas are busy)
        self.counters = DsiCounters()

    @property
    def drafting(self) -> bool:
        return self._state.drafting

    def _fresh(self, snapshot: RoundSnapshot) -> RoundSnapshot:
        index, self._next_index = self._next_index, self._next_index + 1
        return dataclasses.replace(snapshot, round_index=index)

    async def run(self) -> AsyncGenerator[DsiCommit, None]:
        """Yields every commit in position order; the last one carries the finish reason."""
        try:
            while True:
                self._launch()
                tasks = self._tasks()
                assert tasks, "the chain always has a call in flight"
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                self._collect(done)
                while (applied := self._apply_one()) is not None:
                    if applied.committed.finish is not None:
                        self._stop()  # counted before the caller reads the counters
                        yield applied
                        return
                    yield applied
        finally:
            await self._cancel_all()

    # ---- launching ----

    def _tasks(self) -> set[asyncio.Task[Any]]:
        tasks: set[asyncio.Task[Any]] = {t for t in self._dying if not t.done()}
        for block in self._chain:
            if block.draft_task is not None and block.drafted is None:
                tasks.add(block.draft_task)
            if block.verify_task is not None and block.scored is None:
                tasks.add(block.verify_task)
        if self._plain is not None and self._plain.scored is None:
            tasks.add(self._plain.task)
        return tasks

    def _free_replicas(self) -> list[str]:
        replicas = self._calls.replicas()
        if not replicas:  # none usable now: one call at a time, and the pool waits for or probes one
            return [] if any(self._busy.values()) or self._scoring() else [""]
        return [r for r in replicas if not self._busy.get(r)]

    def _scoring(self) -> bool:
        running = [b.verify_task for b in self._chain if b.verify_task is not None and b.scored is None]
        return bool(running) or self._plain is not None

    def _launch(self) -> None:
        if not self._chain and self._plain is None and (self._knobs.plain_steps or not self._can_draft()):
            self._launch_plain()  # before the draft: a plain step launched first decides its position
        self._launch_draft()
        self._launch_verifications()

    def _can_draft(self) -> bool:
        return self._state.drafting and block_budget(self._state, self._knobs.block_size) > 0

    def _launch_plain(self) -> None:
        free = self._free_replicas()
        if not free:
            return
        snapshot = self._fresh(self._state)
        call = score_call(snapshot, EMPTY)
        replica = self._closest(free, call)
        task = self._start_score(call, replica)
        self._plain = _Plain(snapshot, task, replica)

    def _launch_draft(self) -> None:
        if not self._state.drafting or len(self._chain) >= self._knobs.depth:
            return
        if self._chain and self._chain[-1].draft_task is not None and self._chain[-1].drafted is None:
            return  # the drafter drafts one block at a time
        if not self._chain:
            base: RoundSnapshot | None = self._state
        else:
            last = self._chain[-1].drafted
            base = None if last is None or not last.candidates.tokens else speculative_snapshot(last, 0)
        if base is None:
            return
        k = block_budget(base, self._knobs.block_size)
        if k <= 0:
            return
        snapshot = self._fresh(base)
        block = _Block(snapshot, draft_call(snapshot, k, self._threshold))
        assert block.call is not None
        block.draft_task = asyncio.ensure_future(self._calls.draft(block.call))
        self._chain.append(block)

    def _launch_verifications(self) -> None:
        for block in self._chain:
            if block.drafted is None or block.verify_task is not None:
                continue
            free = self._free_replicas()
            if not free:
                return
            call = score_call(block.snapshot, block.drafted.candidates)
            block.replica = self._closest(free, call)
            block.verify_task = self._start_score(call, block.replica)
            wait = max(0.0, self._clock() - block.ready_at)
            self.counters.call_queue_seconds += wait
            self.counters.queue_waits.append(wait)

    def _closest(self, replicas: list[str], call: ScoreCall) -> str:
        """The replica whose cache holds the longest prefix of the call's context (first wins ties)."""
        return min(replicas, key=lambda r: self._calls.uncached_tokens(r, call) if r else 0)

    def _start_score(self, call: ScoreCall, replica: str) -> asyncio.Task[ScoreOutcome]:
        """Starts a Score on ``replica``, marked busy for this request from now until the call ends."""
        held: list[str] = []

        def hold(address: str) -> None:
            for old in held:
                self._busy[old] -= 1
            held[:] = [address] if address else []
            if address:
                self._busy[address] = self._busy.get(address, 0) + 1

        def on_replica(address: str) -> None:
            hold(address)
            self.counters.replicas_used.add(address)

        def busy() -> list[str]:
            return [r for r, n in self._busy.items() if n and r not in held]

        async def score() -> ScoreOutcome:
            try:
                return await self._calls.score(call, replica, busy, on_replica)
            finally:
                hold("")

        hold(replica)
        return asyncio.ensure_future(score())

    # ---- collecting ----

    def _collect(self, done: set[asyncio.Task[Any]]) -> None:
        for block in list(self._chain):
            if block.draft_task in done and block.drafted is None:
                self._drafted(block)
            if block.verify_task in done and block.scored is None:
                block.scored = block.verify_task.result()  # a failed target fails the request
                self._count_score(block.scored)
        if self._plain is not None and self._plain.task in done:
            self._plain.scored = self._plain.task.result()
            self._count_score(self._plain.scored)

    def _count_score(self, scored: ScoreOutcome) -> None:
        self.counters.target_forwards += scored.stats.forwards
        self.counters.target_tokens_computed += scored.stats.computed_tokens
        self.counters.emulated_latency |= scored.stats.emulated_latency

    def _drafted(self, block: _Block) -> None:
        assert block.draft_task is not None and block.call is not None
        try:
            outcome = block.draft_task.result()
            proposed = candidates(block.snapshot, block.call, outcome)
        except (DrafterFailedError, UnusableDraftError) as exc:
            self._fall_back(block, str(exc))
            return
        self.counters.drafter_forwards += outcome.stats.forwards
        self.counters.short_drafts += len(outcome.draft_tokens) < block.call.max_draft_tokens
        self.counters.emulated_latency |= outcome.stats.emulated_latency
        block.drafted = DraftedBlock(block.snapshot, outcome, proposed)
        block.ready_at = self._clock()
        if (
            self._chain
            and self._chain[0] is block
            and usable_offset(block.drafted, self._state.output) is None
        ):
            self._cut(0)  # a plain step decided its first position otherwise

    def _fall_back(self, block: _Block, reason: str) -> None:
        """The drafter failed: this block and the ones after it go; the request decodes target-only."""
        self._cut(self._chain.index(block))
        self._state = dataclasses.replace(self._state, drafting=False)
        if self._on_fallback is not None:
            self._on_fallback(reason)

    # ---- applying, in position order ----

    def _apply_one(self) -> DsiCommit | None:
        """Applies the next finished result that decides the first uncommitted position (None: none yet)."""
        if self._plain is not None:
            return self._apply_plain() if self._plain.scored is not None else None
        if not self._chain or self._chain[0].scored is None:
            return None
        block = self._chain[0]
        assert block.drafted is not None and block.scored is not None
        decision = block_commit(block.drafted, block.scored, self._state.output, len(self._chain) > 1)
        if decision is None:
            self._cut(0)
            return None
        self.counters.rounds += 1
        self.counters.draft_tokens += len(block.drafted.candidates.tokens)
        self.counters.accepted_tokens += decision.verified.accepted
        self.counters.bonus_discarded += decision.bonus_discarded
        since_base = (*self._state.output[block.drafted.base :], *decision.committed.tokens)
        view = next_view(block.snapshot, block.drafted.drafted, since_base) if self._state.drafting else None
        self._advance(decision.committed, view)
        self._chain.pop(0)
        if not decision.continues:
            self._cut(0)
        drafted = block.drafted
        return DsiCommit(
            decision.committed,
            self._state.view,
            block.scored,
            drafted.drafted,
            len(drafted.candidates.tokens),
            decision.verified.accepted,
            near_tie_offsets(
                block.snapshot, decided_margins(block.scored, decision.offset), decision.committed
            ),
        )

    def _apply_plain(self) -> DsiCommit:
        plain = self._plain
        assert plain is not None and plain.scored is not None
        self._plain = None
        committed = commit(plain.snapshot, decide(plain.snapshot, EMPTY, plain.scored))
        view = next_view(plain.snapshot, None, committed.tokens) if self._state.drafting else None
        self.counters.rounds += 1
        self.counters.plain_steps += 1
        self._advance(committed, view)
        head = self._chain[0].drafted if self._chain else None
        if head is not None and usable_offset(head, self._state.output) is None:
            self._cut(0)  # its first candidate is not the plain step's token
        ties = near_tie_offsets(plain.snapshot, plain.scored, committed)
        return DsiCommit(committed, self._state.view, plain.scored, near_ties=ties)

    def _advance(self, committed: Committed, view: DrafterView | None) -> None:
        output = (*self._state.output, *committed.tokens)
        keep_view = view if self._state.view is not None else None
        self._state = dataclasses.replace(self._state, output=output, view=keep_view)

    # ---- pre-emption ----

    def _cut(self, start: int) -> None:
        """Pre-empts the blocks from ``start`` on: their running calls are cancelled, results discarded."""
        for block in self._chain[start:]:
            if block.draft_task is not None and block.drafted is None:
                self._kill(block.draft_task)
                self.counters.drafts_preempted += 1
            if block.verify_task is not None:
                self._kill(block.verify_task)
                self.counters.verifications_preempted += 1
        del self._chain[start:]

    def _kill(self, task: asyncio.Task[Any]) -> None:
        if not task.done():
            task.cancel()
            self._dying.add(task)
            task.add_done_callback(self._buried)

    def _buried(self, task: asyncio.Task[Any]) -> None:
        self._dying.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a pre-empted call's error does not matter

    def _stop(self) -> None:
        """Pre-empts everything still running (the request is finished or abandoned)."""
        self._cut(0)
        if self._plain is not None:
            self._kill(self._plain.task)
            self.counters.verifications_preempted += 1
            self._plain = None

    async def _cancel_all(self) -> None:
        """Cancels every call still running and waits for them to end (their replicas are free after)."""
        self._stop()
        tasks = list(self._dying)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
