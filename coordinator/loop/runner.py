"""The generation loop: rounds until a stop condition, as events.

A request runs under the scheduler ``params.scheduler or settings.default_scheduler`` resolves to
(``coordinator.dsi.policy``): SI, below, or DSI (``coordinator.dsi``: blocks verified on several target
replicas at once); both yield commits that this module turns into events, statistics and metrics.

Before each round the lookahead policy chooses the number of draft tokens; the round itself runs on a
frozen snapshot of the request (``coordinator.loop.round``: draft -> candidates -> score -> decide ->
commit, for sd, tli, slem and slrs); its result is then applied here: the output, the counters and
metrics, a fallback, and a cross-vocabulary drafter's view re-synced to the committed text. The lookahead
observes every round.

Failure handling:
- a drafter failure (unavailable, over capacity, refused, malformed answer, per-call timeout) switches
  the request to target-only decoding for its remaining rounds and records why in
  ``fallback_reason``. This holds when ``sd`` was asked for explicitly too: the output law is the
  target's either way, and availability wins over speed;
- while every drafter replica is ejected after repeated failures (``ReplicaPool``: the drafter's
  circuit breaker), rounds are plain target steps without trying the drafter, and drafting resumes
  once a probe lets a replica back; the statistics count those rounds;
- a target replica that fails or hangs has its call re-sent to another replica (``ReplicaPool.call``,
  with a timeout from the measured cost); the call backs off and retries while the request's deadline
  and the pool's retry time allow; then the request fails with UNAVAILABLE naming the target;
- the request deadline bounds every call; on an error, deadline or cancellation both services' caches
  of the request are released (shielded, so a cancellation does not skip it).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import AsyncGenerator

import structlog

from coordinator.clients import Deadline
from coordinator.dsi.policy import SchedulerChoice, measured_costs
from coordinator.dsimodel import SchedulerKnobs
from coordinator.lookahead import LookaheadDecision, RoundObservation
from coordinator.loop.events import FinishEvent, GenerationEvent, TokensEvent
from coordinator.loop.plan import Regime, plan_request
from coordinator.loop.round import (
    Committed,
    RoundResult,
    Verified,
    candidate_cap,
    draft_budget,
    drafter_window_full,
    lookup_call,
    lookup_candidates,
    near_tie_offsets,
    next_view,
    run_lookup_round,
    run_round,
)
from coordinator.loop.snapshot import RoundSnapshot
from coordinator.loop.state import LoopServices, RequestRun
from coordinator.loop.translate import UnusableDraftError
from coordinator.request import AlgorithmName, FinishReason, GenerationParams, SchedulerName

log = structlog.get_logger(__name__)


async def generate(
    services: LoopServices, params: GenerationParams, deadline: Deadline
) -> AsyncGenerator[GenerationEvent, None]:
    """Runs one request: ``TokensEvent`` per round that committed tokens, then one ``FinishEvent``.

    Close the generator (``contextlib.aclosing``) when abandoning it early, so its caches are released.
    """
    # Tokenization and chat templating take seconds on a large prompt: off the event loop, on the
    # server's bounded pool, so other requests go on meanwhile.
    plan = await asyncio.get_running_loop().run_in_executor(
        services.prompt_pool, plan_request, params, services.pair, services.settings, services.estimates
    )
    run = RequestRun.start(services, params, plan, deadline)
    services.metrics.requests_in_flight.inc()
    services.metrics.prompt_tokens.inc(len(plan.target_prompt))
    structlog.contextvars.bind_contextvars(request_id=params.request_id)
    try:
        choice = await _choose_scheduler(run)
        run.scheduler = choice.scheduler
        rounds = _si_rounds(run) if choice.knobs is None else _dsi_rounds(run, choice.knobs)
        async with contextlib.aclosing(rounds):
            async for committed in rounds:
                if committed.tokens:
                    _observe_tokens(run, len(committed.tokens))
                    yield TokensEvent(committed.tokens)
                if committed.finish is not None:
                    yield _finish(run, committed.finish)
                    return
    finally:
        services.metrics.requests_in_flight.dec()
        structlog.contextvars.unbind_contextvars("request_id")
        await _release(run)


async def _si_rounds(run: RequestRun) -> AsyncGenerator[Committed, None]:
    """SI: one round at a time until one finishes the request."""
    while True:
        yield await _round(run)


def _dsi_rounds(run: RequestRun, knobs: SchedulerKnobs) -> AsyncGenerator[Committed, None]:
    """DSI (``coordinator.dsi``, imported here: it builds on this package's round and state)."""
    from coordinator.dsi.driver import dsi_commits

    return dsi_commits(run, knobs)


async def _choose_scheduler(run: RequestRun) -> SchedulerChoice:
    """SI or DSI (with its knobs) for the request (``coordinator.dsi.policy``); the model's knob search
    runs off the event loop."""
    services = run.services
    asked = run.params.scheduler or services.settings.default_scheduler
    if asked is SchedulerName.SI:
        return SchedulerChoice(SchedulerName.SI, None, "asked for")
    regime = Regime(run.plan.algorithm, run.params.sampling.is_greedy).key
    choose = functools.partial(
        services.dsi_policy.choose,
        asked,
        replicas=len(services.targets.usable_addresses()),
        drafting=run.drafting and services.drafters is not None,
        costs=measured_costs(services.estimates, regime),
        other_requests=max(0, services.admission.running - 1),
    )
    choice = await asyncio.get_running_loop().run_in_executor(services.prompt_pool, choose)
    log.info("scheduler_chosen", scheduler=choice.scheduler.value, reason=choice.reason)
    return choice


def _decide(run: RequestRun, snapshot: RoundSnapshot) -> LookaheadDecision:
    """The round's number of draft tokens and confidence threshold (k = 0: a plain target step)."""
    if drafter_window_full(snapshot):
        run.fall_back("the drafter's context window is full")
        return LookaheadDecision(k=0)
    budget = draft_budget(snapshot)
    if budget == 0 or run.plan.lookahead is None:
        return LookaheadDecision(k=0)
    if not run.calls.drafter_usable():  # the circuit breaker is open: target-only until a probe passes
        run.counters.drafter_ejected_rounds += 1
        return LookaheadDecision(k=0)
    lag = run.calls.drafter_lag(run.frame.drafter_sequence_id, snapshot.drafter_context)
    decision = run.plan.lookahead.decide(snapshot.remaining, lag)
    run.services.metrics.lookahead_tokens.observe(min(decision.k, budget))
    return LookaheadDecision(min(decision.k, budget), decision.confidence_threshold)


async def _round(run: RequestRun) -> Committed:
    """One round on a snapshot of the request, then its result applied to the run."""
    started = time.monotonic()
    snapshot = run.snapshot()
    if run.lookup is not None:
        committed = await _lookup_round(run, snapshot, started)
        if committed is not None:
            return committed
    decision = _decide(run, snapshot)
    snapshot = dataclasses.replace(snapshot, drafting=run.drafting)
    if decision.k and snapshot.algorithm is AlgorithmName.SLRS and run.frame.alignment is not None:
        await asyncio.to_thread(run.frame.alignment.target_trie)  # built on first use: seconds when large
    result = await run_round(snapshot, decision.k, decision.confidence_threshold, run.calls)
    _apply(run, snapshot, result)
    observation = _observation(decision.k, result, time.monotonic() - started)
    if run.plan.lookahead is not None and run.drafting:
        run.plan.lookahead.observe(observation)
        if log.is_enabled_for(logging.DEBUG):  # the fields are built only where they are logged
            log.debug("round", round=run.counters.rounds, **dataclasses.asdict(observation))
    else:  # target-only rounds time the target for every request's lookahead
        run.services.estimates.observe(observation)
    run.counters.rounds += 1
    run.services.metrics.rounds.labels(algorithm=run.plan.algorithm.value, scheduler="si").inc()
    return result.committed


async def _lookup_round(run: RequestRun, snapshot: RoundSnapshot, started: float) -> Committed | None:
    """The round verifies the lookup drafter's draft when ``LookupChooser`` expects it to pay more than the
    model drafter's round; None: the round goes on without it."""
    assert run.lookup is not None
    k = min(
        candidate_cap(snapshot), run.services.lookup_max_draft_tokens, run.services.settings.max_lookahead_k
    )
    if k <= 0:
        return None
    asked = time.monotonic()
    drafted = await run.calls.lookup(lookup_call(snapshot, run.lookup_sequence_id, k))
    run.lookup.observe_call(time.monotonic() - asked)
    if drafted is None:
        return None
    try:
        proposed = lookup_candidates(snapshot, drafted)
    except UnusableDraftError as exc:
        log.warning("lookup_draft_unusable", error=str(exc))
        return None
    if not run.lookup.take(len(proposed.tokens), _model_rate(run, snapshot)):
        return None
    result = await run_lookup_round(snapshot, proposed, run.calls)
    _apply(run, snapshot, result)
    run.lookup.observe(_observation(len(proposed.tokens), result, time.monotonic() - started))
    run.counters.rounds += 1
    run.counters.lookup_rounds += 1
    run.services.metrics.rounds.labels(algorithm="lookup", scheduler="si").inc()
    return result.committed


def _model_rate(run: RequestRun, snapshot: RoundSnapshot) -> float | None:
    """Expected output tokens per second of the round the model drafter (or a target-only step) would
    run instead of a lookup round; None where the lookahead does not price its rounds."""
    policy = run.plan.lookahead
    if run.drafting and policy is not None:
        best_rate = getattr(policy, "best_rate", None)
        return None if best_rate is None else best_rate(snapshot.remaining)
    estimates = run.services.estimates
    verify_one = estimates.verify_seconds(1)
    if verify_one is None:
        return None
    return 1.0 / max(1e-9, verify_one + (estimates.ar_overhead_seconds or 0.0))


def _apply(run: RequestRun, snapshot: RoundSnapshot, result: RoundResult) -> None:
    """Applies one round to the request: counters, metrics, a fallback, the output and the drafter's view."""
    counters, proposed = run.counters, result.candidates
    if result.drafted is not None:
        counters.drafter_forwards += result.drafted.stats.forwards
        counters.emulated_latency |= result.drafted.stats.emulated_latency
    counters.target_forwards += result.scored.stats.forwards
    counters.target_tokens_computed += result.scored.stats.computed_tokens
    if run.calls.target_replica is not None:
        counters.target_replicas.add(run.calls.target_replica)
    counters.emulated_latency |= result.scored.stats.emulated_latency
    counters.draft_tokens += len(proposed.tokens)
    counters.accepted_tokens += result.verified.accepted
    if proposed.slrs_over_budget:
        run.services.metrics.slrs_over_budget_rounds.inc()
        log.info("slrs_over_budget", enumerated=proposed.slrs_enumerated, round=counters.rounds)
    if result.fallback:
        run.fall_back(result.fallback)
    if proposed.tokens:
        _observe_speculation(run, len(proposed.tokens), result.verified)
    committed = result.committed
    _record_near_ties(run, near_tie_offsets(snapshot, result.scored, committed))
    run.output.extend(committed.tokens)
    if committed.finish is None and run.drafting:
        run.view = next_view(snapshot, result.drafted, committed.tokens)


def _record_near_ties(run: RequestRun, offsets: tuple[int, ...]) -> None:
    """Records the output positions this round decided at a near-tie (before its tokens are appended)."""
    for offset in offsets:
        position = len(run.output) + offset
        run.near_ties.append(position)
        log.info("near_tie", position=position, margin_below=run.frame.near_tie_logit_margin)


def _observation(requested: int, result: RoundResult, seconds: float) -> RoundObservation:
    draft_stats = None if result.drafted is None or result.fallback else result.drafted.stats
    verify_stats = result.scored.stats
    return RoundObservation(
        drafted=len(result.candidates.tokens),
        accepted=result.verified.accepted,
        draft_seconds=0.0 if draft_stats is None else draft_stats.compute_seconds,
        draft_forwards=0 if draft_stats is None else draft_stats.forwards,
        draft_computed_tokens=0 if draft_stats is None else draft_stats.computed_tokens,
        verify_seconds=verify_stats.compute_seconds,
        verify_tokens=verify_stats.computed_tokens,
        round_seconds=seconds,
        requested=requested,
    )


def _observe_speculation(run: RequestRun, drafted: int, verified: Verified) -> None:
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
    scheduler = stats.scheduler.value
    metrics.requests.labels(
        algorithm=stats.algorithm.value, finish_reason=reason.value, scheduler=scheduler
    ).inc()
    metrics.target_tokens_computed.labels(scheduler=scheduler).inc(stats.target_tokens_computed)
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
    releases = [services.targets.release([run.frame.target_sequence_id], timeout)]
    if services.drafters is not None:
        releases.append(services.drafters.release([run.frame.drafter_sequence_id], timeout))
    if services.lookups is not None:
        releases.append(services.lookups.release([run.lookup_sequence_id], timeout))
    await asyncio.gather(*releases)
