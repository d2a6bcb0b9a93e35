"""Toy target replicas and a toy drafter for the DSI scheduler, in process, under seeded delays.

``ToyReplicaCalls`` is a ``coordinator.dsi.scheduler.DsiCalls`` over one drafter ``ToyModel`` and one
target ``ToyModel`` per replica (each with its own cache; a ``tests.support.law_toys.CachedToy`` serves
the same laws faster). Delays are sleeps of whole ``DelayRule.unit_seconds``, drawn per call from a
seeded ``random.Random``; under ``run_virtual`` (an event loop with a virtual clock that jumps to the next
timer instead of sleeping) they cost no wall time, so an interleaving is reproducible and a request runs
in well under a millisecond. The scheduler reads the loop's clock. Every call is logged (``CallLog``) so
tests can check what the scheduler did with it: finished, cancelled, its result used or not.
``run_many`` runs a request once per seed, many at a time on one virtual loop.
"""

from __future__ import annotations

import asyncio
import gc
import random
import selectors
from collections.abc import Callable, Collection, Coroutine, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from coordinator.dsi.scheduler import DsiCommit, DsiCounters, DsiScheduler
from coordinator.dsimodel import SchedulerKnobs
from coordinator.loop.round import DrafterFailedError
from coordinator.loop.snapshot import RequestFrame, RoundSnapshot
from core.errors import UnavailableError
from core.modelcalls import DraftCall, DraftOutcome, ScoreCall, ScoreOutcome
from tests.support.frames import first_snapshot, with_seed
from tests.support.toy_service import ToyModel

T = TypeVar("T")


class _VirtualSelector(selectors.SelectSelector):
    """Never waits: a select with a timeout moves the virtual clock on by it and reports no events."""

    def __init__(self, advance: Callable[[float], None]) -> None:
        super().__init__()
        self._advance = advance

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise RuntimeError("virtual clock: nothing is ready and no timer is set (every task waits)")
        self._advance(max(timeout, 0.0))
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` is virtual: when no callback is ready it jumps to the next timer.

    Sleeps and timeouts cost no wall time and their order is exactly that of their virtual deadlines.
    Only for coroutines that wait on each other and on timers (no sockets, no threads).
    """

    def __init__(self) -> None:
        self._virtual_now = 0.0
        super().__init__(_VirtualSelector(self._advance))

    def _advance(self, seconds: float) -> None:
        self._virtual_now += seconds

    def time(self) -> float:
        return self._virtual_now


def run_virtual(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on a ``VirtualClockLoop``."""
    with asyncio.Runner(loop_factory=VirtualClockLoop) as runner:
        return runner.run(main)


@dataclass(frozen=True)
class DelayRule:
    """Time units per call: a drafter call costs ``draft_per_token`` per token it drafted (short drafts,
    e.g. confidence stops, finish early) plus up to ``draft_jitter``; a Score costs ``score_base`` plus up
    to ``score_jitter`` (each jitter uniform over whole units)."""

    draft_per_token: int = 2
    draft_jitter: int = 0
    score_base: int = 4
    score_jitter: int = 6
    unit_seconds: float = 1e-3  # virtual under ``run_virtual``


@dataclass
class CallRecord:
    method: str  # "Draft" or "Score"
    replica: str
    context: tuple[int, ...]
    candidates: tuple[int, ...] = ()
    finished: bool = False
    cancelled: bool = False
    result: object | None = None


@dataclass
class CallLog:
    calls: list[CallRecord] = field(default_factory=list)
    running: dict[str, int] = field(default_factory=dict)  # replica -> Score calls in flight
    most_at_once: dict[str, int] = field(default_factory=dict)


class ToyReplicaCalls:
    """A drafter and ``len(targets)`` target replicas (replica names ``r0``, ``r1``, ...)."""

    def __init__(
        self,
        targets: Sequence[ToyModel],
        drafter: ToyModel | None,
        delays: DelayRule,
        rng: random.Random,
        *,
        failing: Collection[str] = (),
    ) -> None:
        self.targets = {f"r{i}": model for i, model in enumerate(targets)}
        self.drafter = drafter
        self.delays = delays
        self.rng = rng
        self.failing = set(failing)  # replicas that answer UNAVAILABLE
        self.drafter_down = False
        self.log = CallLog()

    def replicas(self) -> Sequence[str]:
        return [r for r in self.targets if r not in self.failing]

    def uncached_tokens(self, replica: str, call: ScoreCall) -> int:
        held = self.targets[replica].state.held.get(call.context.sequence_id, []) if replica else []
        tokens = call.context.tokens
        same = 0
        for a, b in zip(held, tokens, strict=False):
            if a != b:
                break
            same += 1
        return len(tokens) - same

    async def _turns(self, count: int) -> None:
        await asyncio.sleep(count * self.delays.unit_seconds)

    async def draft(self, call: DraftCall) -> DraftOutcome:
        if self.drafter is None or self.drafter_down:
            raise DrafterFailedError("the toy drafter is down")
        record = CallRecord("Draft", "drafter", tuple(call.context.tokens))
        self.log.calls.append(record)
        try:
            outcome = self.drafter.draft(call)
            jitter = self.rng.randint(0, self.delays.draft_jitter)
            await self._turns(self.delays.draft_per_token * max(1, len(outcome.draft_tokens)) + jitter)
        except asyncio.CancelledError:
            record.cancelled = True
            raise
        record.finished, record.result = True, outcome
        return outcome

    async def score(
        self,
        call: ScoreCall,
        replica: str,
        busy: Callable[[], Collection[str]],
        on_replica: Callable[[str], None],
    ) -> ScoreOutcome:
        choice = replica if replica and replica not in self.failing else ""
        if not choice:
            free = [r for r in self.replicas() if r not in busy()]
            if not free:
                raise UnavailableError("no toy replica is free")
            choice = free[0]
        on_replica(choice)
        record = CallRecord("Score", choice, tuple(call.context.tokens), tuple(call.candidate_tokens))
        self.log.calls.append(record)
        running = self.log.running
        running[choice] = running.get(choice, 0) + 1
        self.log.most_at_once[choice] = max(self.log.most_at_once.get(choice, 0), running[choice])
        try:
            await self._turns(self.delays.score_base + self.rng.randint(0, self.delays.score_jitter))
            outcome = self.targets[choice].score(call)
        except asyncio.CancelledError:
            record.cancelled = True
            raise
        finally:
            running[choice] -= 1
        record.finished, record.result = True, outcome
        return outcome


async def run_dsi(
    start: RoundSnapshot, calls: ToyReplicaCalls, knobs: SchedulerKnobs, threshold: float = 0.0
) -> tuple[tuple[int, ...], list[DsiCommit], DsiScheduler]:
    """One request through the scheduler: its output, every commit, the scheduler (its counters)."""
    clock = asyncio.get_running_loop().time
    scheduler = DsiScheduler(start, calls, knobs, threshold=threshold, clock=clock)
    commits: list[DsiCommit] = []
    async with aclosing(scheduler.run()) as stream:
        async for applied in stream:
            commits.append(applied)
    output = tuple(token for applied in commits for token in applied.committed.tokens)
    return (*start.output, *output), commits, scheduler


def run_many(
    frame: RequestFrame,
    make_calls: Callable[[int], ToyReplicaCalls],
    knobs: SchedulerKnobs,
    seeds: Sequence[int],
    *,
    threshold: float = 0.0,
    batch: int = 256,
) -> tuple[list[tuple[int, ...]], DsiCounters]:
    """The request once per seed (``batch`` at a time on one virtual-clock loop, each with its own
    replicas): the outputs and the scheduler counters summed over the runs."""
    total = DsiCounters()

    async def one(seed: int) -> tuple[int, ...]:
        calls = make_calls(seed)
        output, _, scheduler = await run_dsi(first_snapshot(with_seed(frame, seed)), calls, knobs, threshold)
        add_counters(total, scheduler.counters)
        return output

    async def every() -> list[tuple[int, ...]]:
        outputs: list[tuple[int, ...]] = []
        for start in range(0, len(seeds), batch):
            outputs += await asyncio.gather(*(one(s) for s in seeds[start : start + batch]))
        return outputs

    gc.collect()
    gc.freeze()  # the long-lived setup is not scanned again by every collection of the runs' garbage
    try:
        return run_virtual(every()), total
    finally:
        gc.unfreeze()


def add_counters(total: DsiCounters, one: DsiCounters) -> None:
    for name in ("rounds", "draft_tokens", "accepted_tokens", "verifications_preempted", "drafts_preempted"):
        setattr(total, name, getattr(total, name) + getattr(one, name))
    total.plain_steps += one.plain_steps
    total.bonus_discarded += one.bonus_discarded
    total.short_drafts += one.short_drafts
