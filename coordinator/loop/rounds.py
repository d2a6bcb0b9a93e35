"""One round of the SI loop, split at its natural boundaries: draft, verify, commit.

- draft: the drafter proposes up to k draft tokens with the exact (sparse) distributions it sampled
  them from; any drafter failure switches the request to target-only decoding (``RequestRun.fall_back``).
  This module drafts for ``sd``; ``coordinator.loop.crossvocab`` turns drafts of another vocabulary
  into candidates (TLI, SLEM, SLRS) with the same Draft call.
- verify: one target Score over the candidates. Greedy requests and SLEM use exact match (the target's
  sample must equal each candidate); otherwise the exact proposals are shipped and the
  speculative-sampling rule applied with the coordinator's own acceptance uniforms
  (``coordinator.verify``). A round without candidates is a plain target step (the target's sample is
  the output token).
- commit: append the output tokens, truncated at the first EOS (unless ``ignore_eos``), at
  ``max_new_tokens`` and at the target's context window.

Every draw is seeded from the request seed per round and purpose (``coordinator.seeds``).
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass

import structlog
import torch

from coordinator.clients import ModelServiceClient
from coordinator.loop.events import FinishReason
from coordinator.loop.state import RequestRun
from coordinator.seeds import SeedPurpose, generator_for, round_seed
from coordinator.verify.speculative import (
    accept_exact_match,
    accept_speculative,
    acceptance_uniforms,
    output_tokens,
)
from core.errors import DeadlineExceededError, PolyspecError
from core.modelcalls import (
    ContextRef,
    DraftCall,
    DraftOutcome,
    ForwardStats,
    ScoreCall,
    ScoreOutcome,
    SparseProbs,
)

log = structlog.get_logger(__name__)


class MalformedResponseError(RuntimeError):
    """A model service answered with something that breaks the protocol."""


@dataclass(frozen=True)
class Drafted:
    """The candidates of one round (target ids) with how to verify them, and what drafting cost.

    ``distributions`` holds the exact proposal of each candidate in target ids (speculative sampling),
    or is None for exact-match verification (SLEM, or any round of a greedy request).
    """

    tokens: tuple[int, ...]
    distributions: tuple[SparseProbs, ...] | None  # one per token
    candidate_draft_probs: tuple[float, ...]  # draft_probs[i][tokens[i]]; empty for exact match
    stats: ForwardStats


@dataclass(frozen=True)
class Verified:
    """What one target Score call decided."""

    output: tuple[int, ...]  # accepted + recovered / bonus (or the plain target sample)
    accepted: int
    stats: ForwardStats


def _seed(run: RequestRun, purpose: SeedPurpose) -> int:
    return round_seed(run.plan.seed, run.counters.rounds, purpose)


def draft_request(run: RequestRun, k: int, confidence_threshold: float) -> DraftCall:
    """The Draft call of a round: the drafter's context, the request's own warpers and seed."""
    drafter = run.services.pair.drafter
    assert drafter is not None
    return DraftCall(
        context=ContextRef.whole(run.drafter_sequence_id, run.drafter_context()),
        max_draft_tokens=k,
        sampling=run.params.sampling,
        seed=_seed(run, SeedPurpose.DRAFT),
        stop_token_ids=frozenset() if run.params.ignore_eos else drafter.eos_token_ids,
        confidence_threshold=confidence_threshold,
        max_support=run.services.settings.max_support,
    )


async def call_drafter(run: RequestRun, request: DraftCall, *, masked: bool = False) -> DraftOutcome | None:
    """Runs one Draft call (``masked``: restricted to TLI's token mask); None when the drafter failed.

    Any failure but the request's own deadline switches the request to target-only decoding.
    """
    drafters = run.services.drafters
    assert drafters is not None
    masks = run.services.token_masks if masked else None
    if masked and masks is None:
        run.fall_back("no token mask is set up for this pair")
        return None

    def invoke(client: ModelServiceClient) -> Awaitable[DraftOutcome]:
        if masks is not None:
            return masks.draft(client, request, run.scope)
        return client.draft(request, run.scope)

    try:
        response, run.drafter_replica = await drafters.call(invoke, prefer=run.drafter_replica)
    except DeadlineExceededError:
        if run.scope.deadline.expired():
            raise
        run.fall_back("the drafter did not answer in time")
        return None
    except (PolyspecError, RuntimeError) as exc:  # unavailable, over capacity, refused, malformed
        run.fall_back(str(exc))
        return None
    run.counters.drafter_forwards += response.stats.forwards
    run.counters.emulated_latency |= response.stats.emulated_latency
    return response


async def draft(run: RequestRun, k: int, confidence_threshold: float) -> Drafted | None:
    """Asks a same-vocabulary drafter for up to k draft tokens; None when it failed (the run falls back)."""
    response = await call_drafter(run, draft_request(run, k, confidence_threshold))
    if response is None:
        return None
    try:
        return usable_draft(response, k, run.target.vocab_size)
    except MalformedResponseError as exc:
        run.fall_back(str(exc))
        return None


def usable_draft(response: DraftOutcome, k: int, target_vocab_size: int) -> Drafted:
    """The draft tokens the target can score, with each one's draft probability.

    Drafting is cut before the first position whose shipped distribution reaches outside the target's
    vocabulary (padding rows of a wider drafter head). That distribution is fixed by the earlier
    tokens alone, before its own token is drawn, so the cut is a lookahead decision and the round stays
    lossless.
    """
    tokens, distributions = list(response.draft_tokens), list(response.draft_probs)
    if len(tokens) > k or len(distributions) != len(tokens):
        raise MalformedResponseError(
            f"the drafter sent {len(tokens)} draft tokens and {len(distributions)} distributions for k={k}"
        )
    probs: list[float] = []
    for token, distribution in zip(tokens, distributions, strict=True):
        if any(i >= target_vocab_size for i in distribution.token_ids):
            break
        prob = sum(p for i, p in zip(distribution.token_ids, distribution.probs, strict=True) if i == token)
        if not prob > 0:
            raise MalformedResponseError(f"the drafter sent draft token {token} with probability {prob}")
        probs.append(prob)
    n = len(probs)
    return Drafted(tuple(tokens[:n]), tuple(distributions[:n]), tuple(probs), response.stats)


async def _score(run: RequestRun, request: ScoreCall) -> ScoreOutcome:
    response, run.target_replica = await run.services.targets.call(
        lambda client: client.score(request, run.scope),
        prefer=run.target_replica,
    )
    k = len(request.candidate_tokens)
    if len(response.target_samples) != k + 1:
        raise MalformedResponseError(f"the target sent {len(response.target_samples)} samples for k={k}")
    run.counters.target_forwards += response.stats.forwards
    run.counters.emulated_latency |= response.stats.emulated_latency
    return response


async def target_step(run: RequestRun) -> Verified:
    """A plain decoding step: one target forward, one output token."""
    request = ScoreCall(
        ContextRef.whole(run.target_sequence_id, run.target_context()),
        (),
        None,
        run.params.sampling,
        _seed(run, SeedPurpose.SCORE),
    )
    response = await _score(run, request)
    return Verified((int(response.target_samples[0]),), 0, response.stats)


async def verify(run: RequestRun, drafted: Drafted) -> Verified:
    """Scores the candidates on the target and applies the acceptance rule (speculative or exact match)."""
    exact = run.params.sampling.is_greedy or drafted.distributions is None
    request = ScoreCall(
        ContextRef.whole(run.target_sequence_id, run.target_context()),
        drafted.tokens,
        None if exact else drafted.distributions,
        run.params.sampling,
        _seed(run, SeedPurpose.SCORE),
    )
    response = await _score(run, request)
    candidates = list(drafted.tokens)
    samples = [int(t) for t in response.target_samples]
    if exact:
        accepted = accept_exact_match(torch.tensor(candidates), torch.tensor(samples))
        output = output_tokens(candidates, accepted, samples, None)
    else:
        k = len(candidates)
        if len(response.candidate_target_probs) != k or len(response.recovered_tokens) != k:
            raise MalformedResponseError(f"the target sent incomplete verification data for k={k}")
        uniforms = acceptance_uniforms(k, generator_for(_seed(run, SeedPurpose.ACCEPT)))
        accepted = accept_speculative(
            torch.tensor(list(response.candidate_target_probs), dtype=torch.float64),
            torch.tensor(drafted.candidate_draft_probs, dtype=torch.float64),
            uniforms,
        )
        output = output_tokens(candidates, accepted, samples, list(response.recovered_tokens))
    run.counters.draft_tokens += len(candidates)
    run.counters.accepted_tokens += accepted
    return Verified(tuple(output), accepted, response.stats)


def commit(run: RequestRun, tokens: tuple[int, ...]) -> tuple[tuple[int, ...], FinishReason | None]:
    """Appends a round's output tokens within the request's limits; returns them and the finish reason."""
    target = run.target
    room = min(
        run.params.max_new_tokens - len(run.output),
        target.max_context_tokens - len(run.plan.target_prompt) - len(run.output),
    )
    taken = tokens[: max(0, room)]
    finish: FinishReason | None = None
    if not run.params.ignore_eos:
        for index, token in enumerate(taken):
            if token in target.eos_token_ids:
                taken, finish = taken[: index + 1], FinishReason.STOP
                break
    run.output.extend(taken)
    if finish is None:
        if len(run.output) >= run.params.max_new_tokens:
            finish = FinishReason.LENGTH
        elif len(run.plan.target_prompt) + len(run.output) >= target.max_context_tokens:
            finish = FinishReason.CONTEXT
    return taken, finish
