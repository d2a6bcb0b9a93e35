"""One round of speculative decoding: draft -> candidates -> score -> decide -> commit.

Pure functions over a ``RoundSnapshot``, and two model-service calls (``ModelCalls``) between them:

    draft_call(snapshot, k, threshold)        -> DraftCall    the drafter's context, the request's warpers
      drafter                                 -> DraftOutcome draft tokens, each with its exact proposal
    candidates(snapshot, call, drafted)       -> Candidates   target-id candidates, how to verify them
    score_call(snapshot, candidates)          -> ScoreCall    the target's context and the candidates
      target                                  -> ScoreOutcome target probs, samples, recovered tokens
    decide(snapshot, candidates, scored)      -> Verified     accepted candidates + one target token
    commit(snapshot, verified)                -> Committed    within max_new_tokens, EOS and the window
    next_view(snapshot, drafted, committed)   -> DrafterView  the drafter re-synced to the committed text

A request with a lookup drafter (a model-free drafter on the target's tokenizer) may verify its draft
instead: ``lookup_call`` asks it, ``lookup_candidates`` makes same-vocabulary candidates of the draft and
``run_lookup_round`` verifies them; which of the two a round runs is chosen before verification from
the draft's length and earlier rounds only (``coordinator.lookahead.LookupChooser``).

Candidates (``coordinator.loop.translate``): ``sd`` the draft tokens themselves; ``tli`` a draft made
under the intersection mask (registered once per drafter replica, ``coordinator.loop.masks``) mapped into
target ids; ``slem`` the drafted text re-tokenized by the target; ``slrs`` target tokens proposed by SLRS's
process with their exact law psi. A round without candidates is a plain target step (the target's sample
is the output token). Greedy requests and SLEM verify by exact match; otherwise the exact proposals go to
the target and the coordinator applies the speculative-sampling rule with its own acceptance uniforms
(``coordinator.verify.speculative``). Every draw is seeded from the request seed per round and purpose.

Decisions made from committed or drafter-side information only keep the output law the target's:

- An SLRS round whose enumeration exceeds the request's budget is verified as SLEM from the same draft.
- The committed text may end in bytes the drafter cannot see yet (``DrafterView.pending``: an incomplete
  character). SLEM then keeps only drafts that begin with those bytes; SLRS verifies that round as SLEM (its
  process starts at the committed text's end); TLI, whose draft would follow the drafter's shorter view,
  makes that round a plain target step (``drafts_this_round``).
- A drafter failure or a draft its algorithm cannot use (``DrafterFailedError``, ``UnusableDraftError``)
  makes the round a plain target step, and the runner switches the request to target-only decoding.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Protocol

from coordinator.loop.snapshot import DrafterView, RoundSnapshot
from coordinator.loop.translate import (
    EMPTY,
    Candidates,
    UnusableDraftError,
    sd_candidates,
    slem_candidates,
    slrs_candidates,
    text_bytes,
    tli_candidates,
)
from coordinator.request import AlgorithmName, FinishReason
from coordinator.seeds import SeedPurpose, generator_for
from coordinator.verify.speculative import (
    accept_exact_match,
    accept_speculative,
    acceptance_uniforms,
    output_tokens,
)
from coordinator.vocab import resync_drafter
from core.modelcalls import ContextRef, DraftCall, DraftOutcome, ScoreCall, ScoreOutcome


class DrafterFailedError(Exception):
    """The drafter could not draft this round (unavailable, over capacity, too slow, refused)."""


class MalformedResponseError(RuntimeError):
    """The target answered with something that breaks the protocol (the request fails)."""


class ModelCalls(Protocol):
    """The two model-service calls of a round, for one request."""

    async def draft(self, call: DraftCall) -> DraftOutcome:
        """Raises ``DrafterFailedError`` when the drafter cannot draft."""
        ...

    async def score(self, call: ScoreCall) -> ScoreOutcome: ...


@dataclass(frozen=True)
class Verified:
    """What the target's verification decided: the accepted candidates, then one target token."""

    output: tuple[int, ...]
    accepted: int


@dataclass(frozen=True)
class Committed:
    """The output tokens a round commits and, when the request ends with them, why."""

    tokens: tuple[int, ...]
    finish: FinishReason | None


@dataclass(frozen=True)
class RoundResult:
    drafted: DraftOutcome | None  # None: no Draft call this round, or it failed
    candidates: Candidates
    scored: ScoreOutcome
    verified: Verified
    committed: Committed
    fallback: str  # why drafting failed this round ("": it did not); the request goes on target-only


async def run_round(snapshot: RoundSnapshot, k: int, threshold: float, calls: ModelCalls) -> RoundResult:
    """One round: up to k draft tokens (0: a plain target step), verified by one target call, committed."""
    drafted, proposed, fallback = None, EMPTY, ""
    if k > 0 and drafts_this_round(snapshot):
        call = draft_call(snapshot, k, threshold)
        try:
            drafted = await calls.draft(call)
            proposed = candidates(snapshot, call, drafted)
        except (DrafterFailedError, UnusableDraftError) as exc:
            proposed, fallback = EMPTY, str(exc)
    scored = await calls.score(score_call(snapshot, proposed))
    verified = decide(snapshot, proposed, scored)
    return RoundResult(drafted, proposed, scored, verified, commit(snapshot, verified), fallback)


def lookup_call(snapshot: RoundSnapshot, sequence_id: str, k: int) -> DraftCall:
    """A lookup drafter's Draft: up to k tokens continuing the target's own context (target ids)."""
    frame = snapshot.frame
    return DraftCall(
        context=ContextRef.whole(sequence_id, snapshot.target_context),
        max_draft_tokens=k,
        sampling=snapshot.sampling,
        seed=snapshot.seed(SeedPurpose.DRAFT),
        stop_token_ids=frozenset() if frame.params.ignore_eos else frame.target.eos_token_ids,
    )


def lookup_candidates(snapshot: RoundSnapshot, drafted: DraftOutcome) -> Candidates:
    """A lookup draft as same-vocabulary candidates (point-mass proposals), within the round's room;
    ``UnusableDraftError`` for a malformed one."""
    if len(drafted.draft_probs) != len(drafted.draft_tokens):
        raise UnusableDraftError("the lookup drafter sent as many distributions as tokens")
    proposed = sd_candidates(drafted.draft_tokens, drafted.draft_probs, snapshot.frame.target.vocab_size)
    return proposed.truncated(candidate_cap(snapshot))


async def run_lookup_round(snapshot: RoundSnapshot, proposed: Candidates, calls: ModelCalls) -> RoundResult:
    """A round that verifies a lookup drafter's draft (sd with point masses, at any temperature): the
    target scores it and the speculative rule decides, as for a model draft."""
    scored = await calls.score(score_call(snapshot, proposed))
    verified = decide(snapshot, proposed, scored)
    return RoundResult(None, proposed, scored, verified, commit(snapshot, verified), "")


def drafter_window_full(snapshot: RoundSnapshot) -> bool:
    """Whether a drafting request's drafter has no room left in its context window."""
    drafter = snapshot.frame.drafter
    if not snapshot.drafting or drafter is None:
        return False
    return drafter.max_context_tokens - len(snapshot.drafter_context) <= 0


def draft_budget(snapshot: RoundSnapshot) -> int:
    """The most draft tokens this round may verify (0: a plain target step), within every limit: room for
    them plus one recovered or bonus token in the output and the target's window, the drafter's window and
    its own per-call limit."""
    drafter = snapshot.frame.drafter
    if not snapshot.drafting or drafter is None or drafter_window_full(snapshot):
        return 0
    drafter_room = drafter.max_context_tokens - len(snapshot.drafter_context)
    limits = (snapshot.remaining - 1, snapshot.target_room - 1, drafter_room, drafter.max_draft_tokens)
    return max(0, min(limits))


def drafts_this_round(snapshot: RoundSnapshot) -> bool:
    """False for TLI while the committed text ends in bytes the drafter cannot see (a plain target step)."""
    view = snapshot.view
    return not (snapshot.algorithm is AlgorithmName.TLI and view is not None and view.pending)


def draft_call(snapshot: RoundSnapshot, k: int, threshold: float) -> DraftCall:
    """The round's Draft call: up to k tokens after the drafter's context, with the request's warpers."""
    frame = snapshot.frame
    assert frame.drafter is not None, "only a request with a drafter drafts"
    masked = snapshot.algorithm is AlgorithmName.TLI and frame.alignment is not None
    classifier = frame.plan.stop_classifier
    return DraftCall(
        context=ContextRef.whole(frame.drafter_sequence_id, snapshot.drafter_context),
        max_draft_tokens=k,
        sampling=snapshot.sampling,
        seed=snapshot.seed(SeedPurpose.DRAFT),
        stop_token_ids=frozenset() if frame.params.ignore_eos else frame.drafter.eos_token_ids,
        confidence_threshold=threshold,
        max_support=frame.max_support,
        token_mask_id=frame.alignment.mask_id if masked and frame.alignment is not None else "",
        stop_classifier_id="" if classifier is None else classifier.classifier_id,
        stop_classifier_threshold=0.0 if classifier is None else classifier.threshold,
    )


def candidates(snapshot: RoundSnapshot, call: DraftCall, drafted: DraftOutcome) -> Candidates:
    """The round's candidates in target ids; ``UnusableDraftError`` for a draft that cannot be used."""
    tokens, probs = drafted.draft_tokens, drafted.draft_probs
    if len(tokens) > call.max_draft_tokens or len(probs) != len(tokens):
        raise UnusableDraftError(
            f"the drafter sent {len(tokens)} draft tokens and {len(probs)} distributions "
            f"for k={call.max_draft_tokens}"
        )
    if snapshot.algorithm is AlgorithmName.SD:
        return sd_candidates(tokens, probs, snapshot.frame.target.vocab_size)
    try:
        return _across_vocabularies(snapshot, drafted)
    except UnusableDraftError as exc:
        raise UnusableDraftError(f"the drafter sent an unusable draft: {exc}") from exc


def candidate_cap(snapshot: RoundSnapshot) -> int:
    """The most candidates this round may verify: room for them plus one recovered or bonus token."""
    return max(0, min(snapshot.remaining - 1, snapshot.target_room - 1))


def _across_vocabularies(snapshot: RoundSnapshot, drafted: DraftOutcome) -> Candidates:
    frame, view = snapshot.frame, snapshot.view
    alignment = frame.alignment
    assert alignment is not None and view is not None, "cross-vocabulary algorithms run on aligned pairs"
    cap = candidate_cap(snapshot)
    tokens = drafted.draft_tokens
    supports = [(p.token_ids, p.probs) for p in drafted.draft_probs]
    if snapshot.algorithm is AlgorithmName.TLI:
        assert alignment.intersection is not None
        return tli_candidates(tokens, supports, alignment.intersection.drafter_to_target).truncated(cap)
    over_budget = None
    if snapshot.algorithm is AlgorithmName.SLRS and not view.pending:
        slrs = slrs_candidates(
            alignment.target_trie(),
            alignment.drafter,
            tokens,
            supports,
            max_candidates=cap,
            enumeration_budget=frame.slrs_enumeration_budget,
        )
        if not slrs.over_budget:
            return slrs.candidates
        over_budget = slrs.enumerated
    slem = slem_candidates(
        alignment.drafter,
        alignment.target,
        tokens,
        pending=view.pending,
        target_context=snapshot.target_context,
        max_candidates=cap,
        target_rows=alignment.target_rows,
    )
    if over_budget is None:
        return slem
    return replace(slem, slrs_over_budget=True, slrs_enumerated=over_budget)


def score_call(snapshot: RoundSnapshot, proposed: Candidates) -> ScoreCall:
    """The round's Score call: exact proposals for the speculative rule, none for exact match."""
    exact = snapshot.sampling.is_greedy or proposed.proposals is None
    return ScoreCall(
        context=ContextRef.whole(snapshot.frame.target_sequence_id, snapshot.target_context),
        candidate_tokens=proposed.tokens,
        draft_probs=None if exact else proposed.proposals,
        sampling=snapshot.sampling,
        seed=snapshot.seed(SeedPurpose.SCORE),
    )


def decide(snapshot: RoundSnapshot, proposed: Candidates, scored: ScoreOutcome) -> Verified:
    """Applies the acceptance rule (exact match, or speculative with the round's own uniforms)."""
    tokens, k = proposed.tokens, len(proposed.tokens)
    samples = scored.target_samples
    if len(samples) != k + 1:
        raise MalformedResponseError(f"the target sent {len(samples)} samples for k={k}")
    if snapshot.sampling.is_greedy or proposed.proposals is None:
        accepted = accept_exact_match(tokens, samples)
        return Verified(tuple(output_tokens(tokens, accepted, samples, None)), accepted)
    if len(scored.candidate_target_probs) != k or len(scored.recovered_tokens) != k:
        raise MalformedResponseError(f"the target sent incomplete verification data for k={k}")
    uniforms = acceptance_uniforms(k, generator_for(snapshot.seed(SeedPurpose.ACCEPT))).tolist()
    accepted = accept_speculative(scored.candidate_target_probs, proposed.candidate_draft_probs, uniforms)
    return Verified(tuple(output_tokens(tokens, accepted, samples, scored.recovered_tokens)), accepted)


def commit(snapshot: RoundSnapshot, verified: Verified) -> Committed:
    """The round's output tokens truncated at the first EOS (unless ``ignore_eos``), at
    ``max_new_tokens`` and at the target's context window, and the finish reason they reach."""
    frame = snapshot.frame
    taken = verified.output[: max(0, min(snapshot.remaining, snapshot.target_room))]
    if not frame.params.ignore_eos:
        for index, token in enumerate(taken):
            if token in frame.target.eos_token_ids:
                return Committed(taken[: index + 1], FinishReason.STOP)
    finish = None
    if len(taken) >= snapshot.remaining:
        finish = FinishReason.LENGTH
    elif len(taken) >= snapshot.target_room:
        finish = FinishReason.CONTEXT
    return Committed(taken, finish)


def next_view(
    snapshot: RoundSnapshot, drafted: DraftOutcome | None, committed: tuple[int, ...]
) -> DrafterView | None:
    """The drafter's view after the round: its draft tokens kept where they agree with the committed text,
    the rest re-encoded (``coordinator.vocab.resync_drafter``); None for a same-vocabulary drafter."""
    view, alignment = snapshot.view, snapshot.frame.alignment
    if view is None:
        return None
    assert alignment is not None
    generated = view.generated if drafted is None else (*view.generated, *drafted.draft_tokens)
    text = view.committed_text + text_bytes(alignment.target, committed)
    resync = resync_drafter(alignment.drafter, list(generated), text)
    return DrafterView((*generated[: resync.keep], *resync.append), resync.pending, text)


def near_tie_offsets(snapshot: RoundSnapshot, scored: ScoreOutcome, committed: Committed) -> tuple[int, ...]:
    """Indices into ``committed.tokens`` decided by a greedy target argmax under the near-tie margin.

    Committed token j is the target's sample at scored position j (the accepted candidates, then the
    recovered or bonus token), so its margin is ``scored.top2_logit_margins[j]``. Only there may another
    forward shape (a one-token decode against a multi-token verification) round to another token.
    """
    margins = scored.top2_logit_margins
    limit = snapshot.frame.near_tie_logit_margin
    if not snapshot.sampling.is_greedy or not margins:
        return ()
    return tuple(j for j in range(min(len(committed.tokens), len(margins))) if margins[j] < limit)
