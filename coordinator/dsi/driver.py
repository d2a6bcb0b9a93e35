"""DSI for a running request: the scheduler over the coordinator's replica pools, applied to the run.

``PoolCalls`` makes the scheduler's calls through the request's ``ServiceCalls`` (the drafter, its TLI
mask and failures) and the target ``ReplicaPool`` (a chosen replica first; a re-send avoids the replicas
busy with the same request). ``dsi_commits`` runs the scheduler and applies each commit to the
``RequestRun``: output, drafter view, counters, metrics and the deployment's cost estimates.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Sequence
from contextlib import aclosing
from typing import Any

from coordinator.callcost import CallWork
from coordinator.clients import ModelServiceClient
from coordinator.dsi.chain import run_algorithm
from coordinator.dsi.scheduler import DsiCommit, DsiCounters, DsiScheduler
from coordinator.dsimodel import SchedulerKnobs
from coordinator.lookahead import RoundObservation
from coordinator.loop.plan import Regime
from coordinator.loop.round import Committed
from coordinator.loop.state import RequestRun
from core.modelcalls import DraftCall, DraftOutcome, ScoreCall, ScoreOutcome

SLRS_NOTE = "slrs runs as slem under the dsi scheduler"


class PoolCalls:
    """The scheduler's calls for one request (a ``coordinator.dsi.scheduler.DsiCalls``)."""

    def __init__(self, run: RequestRun) -> None:
        self._run = run
        self._targets = run.services.targets

    def replicas(self) -> Sequence[str]:
        return self._targets.usable_addresses()

    def uncached_tokens(self, replica: str, call: ScoreCall) -> int:
        client = self._targets.client(replica or None)
        tokens = call.context.tokens
        return len(tokens) if client is None else client.uncached_tokens(call.context.sequence_id, tokens)

    async def draft(self, call: DraftCall) -> DraftOutcome:
        return await self._run.calls.draft(call)

    async def score(
        self,
        call: ScoreCall,
        replica: str,
        busy: Callable[[], Collection[str]],
        on_replica: Callable[[str], None],
    ) -> ScoreOutcome:
        scope = self._run.scope

        def invoke(client: ModelServiceClient, timeout: float) -> Awaitable[ScoreOutcome]:
            on_replica(client.address)
            return client.score(call, scope.with_timeout(timeout))

        def work(client: ModelServiceClient) -> CallWork:
            context = call.context
            uncached = client.uncached_tokens(context.sequence_id, context.tokens)
            return CallWork(1, uncached + len(call.candidate_tokens))

        started = time.monotonic()
        outcome, _ = await self._targets.call(
            invoke, prefer=replica or None, work=work, deadline=scope.deadline, avoid=busy
        )
        self._run.calls.times.add_score(started, outcome.stats.compute_seconds)
        self._targets.costs.observe(outcome.stats)
        return outcome


def block_shape(run: RequestRun, knobs: SchedulerKnobs) -> tuple[SchedulerKnobs, float]:
    """The knobs with the block size a static or confidence lookahead names (its ``k``), and the drafter's
    confidence threshold of the request's lookahead policy."""
    lookahead: Any = run.plan.lookahead
    k = getattr(lookahead, "k", None)
    threshold = getattr(lookahead, "threshold", getattr(lookahead, "confidence_threshold", 0.0))
    if isinstance(k, int) and k >= 1:
        knobs = dataclasses.replace(knobs, block_size=k)
    return knobs, float(threshold or 0.0)


async def dsi_commits(run: RequestRun, knobs: SchedulerKnobs) -> AsyncGenerator[Committed, None]:
    """Runs the request under DSI from its current state, applying every commit to the run."""
    frame = run.frame
    algorithm = run_algorithm(frame.plan.algorithm)
    if algorithm is not frame.plan.algorithm:
        frame = dataclasses.replace(frame, plan=dataclasses.replace(frame.plan, algorithm=algorithm))
        run.scheduler_note = SLRS_NOTE
    start = dataclasses.replace(run.snapshot(), frame=frame)
    knobs, threshold = block_shape(run, knobs)
    scheduler = DsiScheduler(start, PoolCalls(run), knobs, threshold=threshold, on_fallback=run.fall_back)
    regime = Regime(algorithm, run.params.sampling.is_greedy).key
    before = DsiCounters()
    async with aclosing(scheduler.run()) as commits:
        async for applied in commits:
            _apply(run, applied, regime)
            before = _sync(run, scheduler, before)
            yield applied.committed


def _apply(run: RequestRun, applied: DsiCommit, regime: str) -> None:
    for offset in applied.near_ties:
        run.near_ties.append(len(run.output) + offset)
    run.output.extend(applied.committed.tokens)
    if applied.view is not None:
        run.view = applied.view
    metrics = run.services.metrics
    metrics.rounds.labels(algorithm=run.plan.algorithm.value, scheduler="dsi").inc()
    if applied.candidates:
        metrics.num_drafts.inc()
        metrics.num_draft_tokens.inc(applied.candidates)
        metrics.num_accepted_tokens.inc(applied.accepted)
        metrics.num_emitted_tokens.inc(len(applied.committed.tokens))
    drafted = applied.drafted
    observation = RoundObservation(
        drafted=applied.candidates,
        accepted=applied.accepted,
        draft_seconds=0.0 if drafted is None else drafted.stats.compute_seconds,
        draft_forwards=0 if drafted is None else drafted.stats.forwards,
        draft_computed_tokens=0 if drafted is None else drafted.stats.computed_tokens,
        verify_seconds=applied.scored.stats.compute_seconds,
        verify_tokens=applied.scored.stats.computed_tokens,
        round_seconds=applied.scored.stats.compute_seconds
        + (0.0 if drafted is None else drafted.stats.compute_seconds),
        requested=applied.candidates,
    )
    run.services.estimates.observe(observation, regime)


def _sync(run: RequestRun, scheduler: DsiScheduler, before: DsiCounters) -> DsiCounters:
    """Copies the scheduler's counters to the run's and the metrics' (deltas since ``before``)."""
    now, counters = scheduler.counters, run.counters
    counters.rounds = now.rounds
    counters.draft_tokens = now.draft_tokens
    counters.accepted_tokens = now.accepted_tokens
    counters.target_forwards = now.target_forwards
    counters.drafter_forwards = now.drafter_forwards
    counters.emulated_latency |= now.emulated_latency
    counters.target_tokens_computed = now.target_tokens_computed
    counters.verifications_preempted = now.verifications_preempted
    counters.call_queue_seconds = now.call_queue_seconds
    counters.target_replicas = set(now.replicas_used)
    metrics = run.services.metrics
    metrics.verifications_preempted.inc(now.verifications_preempted - before.verifications_preempted)
    for wait in now.queue_waits[len(before.queue_waits) :]:
        metrics.call_queue_seconds.observe(wait)
    return dataclasses.replace(now, replicas_used=set(), queue_waits=list(now.queue_waits))
