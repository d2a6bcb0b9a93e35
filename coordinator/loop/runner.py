"""The SI generation loop: rounds of draft -> verify -> commit until a stop condition, as events.

Each round drafts with the request's algorithm (``crossvocab.propose``: sd, tli, slem or slrs), verifies
the candidates on the target, commits, and re-syncs a cross-vocabulary drafter's view to the committed
text. The lookahead policy chooses the number of drafter tokens per round and observes every round.

Failure handling:
- a drafter failure (unavailable, over capacity, refused, malformed answer, per-call timeout) switches
  the request to target-only decoding for its remaining rounds and records why in
  ``fallback_reason``. This holds when ``sd`` was asked for explicitly too: the output law is the
  target's either way, and availability wins over speed;
- a target replica failure re-dispatches the call to another replica (``ReplicaPool.call``); with no
  replica left the request fails with UNAVAILABLE naming the target;
- the request deadline bounds every call; on an error, deadline or cancellation both services' caches
  of the request are released (shielded, so a cancellation does not skip it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncGenerator

import structlog

from coordinator.clients import Deadline
from coordinator.lookahead import LookaheadDecision, RoundObservation
from coordinator.loop import crossvocab, rounds
from coordinator.loop.events import FinishEvent, FinishReason, GenerationEvent, TokensEvent
from coordinator.loop.plan import plan_request
from coordinator.loop.state import LoopServices, RequestRun
from coordinator.request import GenerationParams

log = structlog.get_logger(__name__)


async def generate(
    services: LoopServices, params: GenerationParams, deadline: Deadline
) -> AsyncGenerator[GenerationEvent, None]:
    """Runs one request: ``TokensEvent`` per round that committed tokens, then one ``FinishEvent``.

    Close the generator (``contextlib.aclosing``) when abandoning it early, so its caches are released.
    """
    plan = plan_request(params, services.pair, services.settings, services.estimates)
    run = RequestRun.start(services, params, plan, deadline)
    services.metrics.requests_in_flight.inc()
    services.metrics.prompt_tokens.inc(len(plan.target_prompt))
    structlog.contextvars.bind_contextvars(request_id=params.request_id)
    try:
        while True:
            committed, finish = await _round(run)
            if committed:
                _observe_tokens(run, len(committed))
                yield TokensEvent(committed)
            if finish is not None:
                yield _finish(run, finish)
                return
    finally:
        services.metrics.requests_in_flight.dec()
        structlog.contextvars.unbind_contextvars("request_id")
        await _release(run)


def _draft_budget(run: RequestRun) -> int:
    """The most draft tokens this round may verify (0: a plain target step), within every limit."""
    drafter = run.services.pair.drafter
    if not run.drafting or drafter is None:
        return 0
    drafter_room = drafter.max_context_tokens - len(run.drafter_context())
    if drafter_room <= 0:
        run.fall_back("the drafter's context window is full")
        return 0
    remaining = run.params.max_new_tokens - len(run.output)
    target_room = run.target.max_context_tokens - len(run.target_context())
    return max(0, min(remaining - 1, target_room - 1, drafter_room, drafter.max_draft_tokens))


def _decide(run: RequestRun) -> LookaheadDecision:
    budget = _draft_budget(run)
    if budget == 0 or run.plan.lookahead is None:
        return LookaheadDecision(k=0)
    decision = run.plan.lookahead.decide(run.params.max_new_tokens - len(run.output), run.drafter_lag())
    run.services.metrics.lookahead_tokens.observe(min(decision.k, budget))
    return LookaheadDecision(min(decision.k, budget), decision.confidence_threshold)


async def _round(run: RequestRun) -> tuple[tuple[int, ...], FinishReason | None]:
    """One round: draft (when the lookahead says so), verify or plain step, commit."""
    started = time.monotonic()
    decision = _decide(run)
    drafted = await crossvocab.propose(run, decision.k, decision.confidence_threshold) if decision.k else None
    if drafted is not None and drafted.tokens:
        verified = await rounds.verify(run, drafted)
        _observe_speculation(run, len(drafted.tokens), verified)
    else:
        verified = await rounds.target_step(run)
    committed, finish = rounds.commit(run, verified.output)
    if finish is None and run.drafting:
        crossvocab.resync(run, committed)
    observation = _observation(decision.k, drafted, verified, time.monotonic() - started)
    if run.plan.lookahead is not None and run.drafting:
        run.plan.lookahead.observe(observation)
        if log.is_enabled_for(logging.DEBUG):  # the fields are built only where they are logged
            log.debug("round", round=run.counters.rounds, **dataclasses.asdict(observation))
    else:  # target-only rounds time the target for every request's lookahead
        run.services.estimates.observe(observation)
    run.counters.rounds += 1
    run.services.metrics.rounds.labels(algorithm=run.plan.algorithm.value).inc()
    return committed, finish


def _observation(
    requested: int, drafted: rounds.Drafted | None, verified: rounds.Verified, seconds: float
) -> RoundObservation:
    drafted_count = 0 if drafted is None else len(drafted.tokens)
    draft_stats = None if drafted is None else drafted.stats
    return RoundObservation(
        drafted=drafted_count,
        accepted=verified.accepted,
        draft_seconds=0.0 if draft_stats is None else draft_stats.compute_seconds,
        draft_forwards=0 if draft_stats is None else draft_stats.forwards,
        draft_computed_tokens=0 if draft_stats is None else draft_stats.computed_tokens,
        verify_seconds=verified.stats.compute_seconds,
        verify_tokens=verified.stats.computed_tokens,
        round_seconds=seconds,
        requested=requested,
    )


def _observe_speculation(run: RequestRun, drafted: int, verified: rounds.Verified) -> None:
    metrics = run.services.metrics
    metrics.num_drafts.inc()
    metrics.num_draft_tokens.inc(drafted)
    metrics.num_accepted_tokens.inc(verified.accepted)
    metrics.num_emitted_tokens.inc(len(verified.output))


def _observe_tokens(run: RequestRun, count: int) -> None:
    now = time.monotonic()
    first = run.first_token_at is None
    previous = run.started if first else run.last_token_at
    run.services.metrics.observe_tokens(now - previous, count, first=first)
    if first:
        run.first_token_at = now
    run.last_token_at = now


def _finish(run: RequestRun, reason: FinishReason) -> FinishEvent:
    stats = run.stats()
    metrics = run.services.metrics
    metrics.requests.labels(algorithm=stats.algorithm.value, finish_reason=reason.value).inc()
    metrics.request_duration.observe(stats.total_seconds)
    log.info(
        "generation_finished",
        finish_reason=reason.value,
        algorithm=stats.algorithm.value,
        output_tokens=stats.output_tokens,
        acceptance_rate=round(stats.acceptance_rate, 4),
        rounds=stats.rounds,
        fallback_reason=stats.fallback_reason or None,
    )
    return FinishEvent(reason=reason, stats=stats)


async def _release(run: RequestRun) -> None:
    """Frees the request's caches on both services, even when the request is being cancelled."""
    task = asyncio.create_task(_release_sequences(run))
    run.services.keep_alive(task)  # a second cancellation must not drop the release
    await asyncio.shield(task)


async def _release_sequences(run: RequestRun) -> None:
    services = run.services
    timeout = services.settings.release_timeout_seconds
    releases = [services.targets.release([run.target_sequence_id], timeout)]
    if services.drafters is not None:
        releases.append(services.drafters.release([run.drafter_sequence_id], timeout))
    await asyncio.gather(*releases)
