"""The draft step of a round for every algorithm, and the drafter's re-sync for cross-vocabulary runs.

One Draft call per round, in the drafter's own ids and from its own view of the text
(``state.DrafterView``), then candidates in target ids (``translate``):

- ``sd``: the draft tokens themselves (``rounds.draft``).
- ``tli``: the Draft names TLI's token mask (registered once per drafter replica, ``masks``), so the
  drafter samples from its distribution renormalised on the vocabulary intersection; draft tokens and
  their sparse proposals are mapped into target ids and verified by speculative sampling (greedy:
  exact match). Where the intersection holds no drafter mass the drafter stops early; with no draft
  token at all the round is a plain target step.
- ``slem``: the drafted text is re-tokenized by the target after the committed tokens and verified by
  exact match (lossless for any drafter sampling; the drafter samples with the request's warpers).
- ``slrs``: the drafter steps run SLRS's proposal process (``coordinator.verify.slrs``); the proposed
  target tokens are verified by speculative sampling against their exact proposal law psi. A round
  whose enumeration exceeds ``LoopServices.slrs_enumeration_budget`` is verified as SLEM from the same
  draft (decided on drafter-side information only, so the output law is unchanged). Greedy requests
  verify the same proposals by exact match: a greedy drafter makes psi a point mass, for which the
  rejection rule is exact match.

The committed text may end in bytes the drafter cannot see yet (``DrafterView.pending``: an incomplete
character). SLEM then keeps only drafts that begin with those bytes and drops them from the drafted
text; SLRS verifies that round as SLEM (its process starts at the committed text's end); TLI, whose
draft tokens would follow the drafter's shorter view, makes that round a plain target step. Each choice
uses committed or drafter-side information only, so the output law is unchanged.

After every commit the drafter's view is re-synced to the committed text (``resync``): the tokens that
agree are kept and the rest re-encoded, so the drafter service crops its cache by longest common
prefix on the next call instead of rebuilding it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog

from coordinator.loop import rounds
from coordinator.loop.state import RequestRun
from coordinator.loop.translate import (
    Candidates,
    UnusableDraftError,
    slem_candidates,
    slrs_candidates,
    text_bytes,
    tli_candidates,
)
from coordinator.pair import VocabAlignment
from coordinator.request import AlgorithmName
from coordinator.verify.slrs import TokenTrie
from coordinator.vocab import resync_drafter
from core.modelcalls import DraftOutcome

log = structlog.get_logger(__name__)


async def propose(run: RequestRun, k: int, confidence_threshold: float) -> rounds.Drafted | None:
    """Drafts up to k drafter tokens and turns them into candidates; None: no candidates this round."""
    algorithm = run.plan.algorithm
    if algorithm is AlgorithmName.SD:
        return await rounds.draft(run, k, confidence_threshold)
    view = run.view
    assert view is not None, "a cross-vocabulary run keeps a drafter view"
    if view.pending and algorithm is AlgorithmName.TLI:
        return None
    request = rounds.draft_request(run, k, confidence_threshold)
    response = await rounds.call_drafter(run, request, masked=algorithm is AlgorithmName.TLI)
    if response is None:
        return None
    view.generated.extend(int(t) for t in response.draft_tokens)
    trie = None
    if algorithm is AlgorithmName.SLRS and not view.pending:  # built on first use: seconds when large
        trie = await asyncio.to_thread(_alignment(run).target_trie)
    try:
        candidates = _candidates(run, response, trie)
    except UnusableDraftError as exc:
        run.fall_back(f"the drafter sent an unusable draft: {exc}")
        return None
    return rounds.Drafted(
        tokens=candidates.tokens,
        distributions=candidates.proposals,
        candidate_draft_probs=candidates.candidate_draft_probs,
        stats=response.stats,
    )


def _alignment(run: RequestRun) -> VocabAlignment:
    alignment = run.services.pair.alignment
    assert alignment is not None, "cross-vocabulary algorithms run on aligned pairs only"
    return alignment


def candidate_cap(run: RequestRun) -> int:
    """The most candidates this round may verify: room for them plus one recovered or bonus token."""
    remaining = run.params.max_new_tokens - len(run.output)
    target_room = run.target.max_context_tokens - len(run.target_context())
    return max(0, min(remaining - 1, target_room - 1))


def _supports(response: DraftOutcome) -> list[tuple[Sequence[int], Sequence[float]]]:
    if len(response.draft_probs) != len(response.draft_tokens):
        raise UnusableDraftError(
            f"{len(response.draft_tokens)} draft tokens but {len(response.draft_probs)} distributions"
        )
    return [(list(d.token_ids), list(d.probs)) for d in response.draft_probs]


def _candidates(run: RequestRun, response: DraftOutcome, trie: TokenTrie | None) -> Candidates:
    """The round's candidates for the run's algorithm (``trie``: the target's, for SLRS)."""
    alignment = _alignment(run)
    tokens = [int(t) for t in response.draft_tokens]
    cap = candidate_cap(run)
    algorithm = run.plan.algorithm
    if algorithm is AlgorithmName.TLI:
        assert alignment.intersection is not None
        translated = tli_candidates(tokens, _supports(response), alignment.intersection.drafter_to_target)
        return Candidates(
            translated.tokens[:cap],
            None if translated.proposals is None else translated.proposals[:cap],
            translated.candidate_draft_probs[:cap],
        )
    if algorithm is AlgorithmName.SLRS and trie is not None:
        slrs = slrs_candidates(
            trie,
            alignment.drafter,
            tokens,
            _supports(response),
            max_candidates=cap,
            enumeration_budget=run.services.slrs_enumeration_budget,
        )
        if not slrs.over_budget:
            return slrs.candidates
        run.services.metrics.slrs_over_budget_rounds.inc()
        log.info("slrs_over_budget", enumerated=slrs.enumerated, round=run.counters.rounds)
    return slem_candidates(
        alignment.drafter,
        alignment.target,
        tokens,
        pending=run.view.pending if run.view is not None else b"",
        target_context=run.target_context(),
        max_candidates=cap,
        target_rows=alignment.target_rows,
    )


def resync(run: RequestRun, committed: Sequence[int]) -> None:
    """Brings the drafter's view in line with the committed text after a round committed ``committed``."""
    view = run.view
    if view is None:
        return
    alignment = _alignment(run)
    view.committed_text += text_bytes(alignment.target, committed)
    result = resync_drafter(alignment.drafter, view.generated, bytes(view.committed_text))
    view.generated = [*view.generated[: result.keep], *result.append]
    view.pending = result.pending
