"""Toy target replicas and a toy drafter for the DSI scheduler, in process, under seeded delays.

``ToyReplicaCalls`` is a ``coordinator.dsi.scheduler.DsiCalls`` over one drafter ``ToyModel`` and one
target ``ToyModel`` per replica (each with its own cache). Delays are event-loop turns (``sleep(0)``):
seeded, so an interleaving is reproducible and runs in microseconds; ``DelayRule`` draws them per call.
Every call is logged (``CallLog``) so tests can check what the scheduler did with it: finished, cancelled,
its result used or not.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Collection, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field

from coordinator.dsi.scheduler import DsiCommit, DsiScheduler
from coordinator.dsimodel import SchedulerKnobs
from coordinator.loop.round import DrafterFailedError
from coordinator.loop.snapshot import RoundSnapshot
from core.errors import UnavailableError
from core.modelcalls import DraftCall, DraftOutcome, ScoreCall, ScoreOutcome
from tests.support.toy_service import ToyModel


@dataclass(frozen=True)
class DelayRule:
    """Event-loop turns per call: a drafter call costs ``draft_per_token`` per token it drafted (short
    drafts, e.g. confidence stops, finish early) plus up to ``draft_jitter``; a Score costs ``score_base``
    plus up to ``score_jitter``."""

    draft_per_token: int = 2
    draft_jitter: int = 0
    score_base: int = 4
    score_jitter: int = 6


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
        for _ in range(count):
            await asyncio.sleep(0)

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
    scheduler = DsiScheduler(start, calls, knobs, threshold=threshold)
    commits: list[DsiCommit] = []
    async with aclosing(scheduler.run()) as stream:
        async for applied in stream:
            commits.append(applied)
    output = tuple(token for applied in commits for token in applied.committed.tokens)
    return (*start.output, *output), commits, scheduler
