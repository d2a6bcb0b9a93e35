"""The DSI block chain's decisions, as pure functions over frozen snapshots (no asyncio, no calls).

A ``Block`` is one draft at the end of the chain and its verification. It starts from a *speculative
snapshot*: the committed output followed by the candidates of the blocks before it in the chain (and,
for a cross-vocabulary drafter, its view re-synced to that text). A block's verification yields the
target's draws at ``base .. base + k`` (``base``: the output length its snapshot starts at).

``usable_offset`` says which of those draws may still decide: positions below the committed length were
decided by plain steps (their tokens must equal the block's candidates there, else the block is stale);
``decide_from`` applies the acceptance rule from that offset on, with the block's own uniforms at those
positions (``coordinator.verify.speculative``); ``block_commit`` turns that into the tokens to commit,
dropping the bonus token when the next block's drafting had started.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from coordinator.loop.round import (
    Committed,
    MalformedResponseError,
    Verified,
    commit,
    decide,
    draft_budget,
    drafts_this_round,
    next_view,
)
from coordinator.loop.snapshot import DrafterView, RoundSnapshot
from coordinator.loop.translate import Candidates
from coordinator.request import AlgorithmName
from coordinator.seeds import SeedPurpose, generator_for
from coordinator.verify.speculative import (
    accept_exact_match,
    accept_speculative,
    acceptance_uniforms,
    output_tokens,
)
from core.modelcalls import DraftOutcome, ScoreOutcome


@dataclass(frozen=True)
class DraftedBlock:
    """A block whose draft finished: its snapshot, the draft and its candidates in target ids."""

    snapshot: RoundSnapshot
    drafted: DraftOutcome | None  # None: a plain step (no draft)
    candidates: Candidates

    @property
    def base(self) -> int:
        return len(self.snapshot.output)

    @property
    def end(self) -> int:
        """The output length after the block's candidates (the next block's base)."""
        return self.base + len(self.candidates.tokens)


def speculative_snapshot(block: DraftedBlock, index: int) -> RoundSnapshot | None:
    """The snapshot the next block drafts from (fresh ``index``), or None when it cannot start yet: the
    drafted text does not end exactly on the candidates (pending bytes), the candidates hold an end of
    sequence, or the drafter's view could not be re-synced."""
    snapshot, tokens = block.snapshot, block.candidates.tokens
    frame = snapshot.frame
    if not frame.params.ignore_eos and any(t in frame.target.eos_token_ids for t in tokens):
        return None
    view: DrafterView | None = next_view(snapshot, block.drafted, tokens)
    if view is not None and view.pending:
        return None
    return dataclasses.replace(snapshot, round_index=index, output=(*snapshot.output, *tokens), view=view)


def block_budget(snapshot: RoundSnapshot, block_size: int) -> int:
    """Draft tokens a block from ``snapshot`` may ask for (0: it cannot draft)."""
    if not drafts_this_round(snapshot):
        return 0
    return max(0, min(block_size, draft_budget(snapshot)))


def usable_offset(block: DraftedBlock, committed: tuple[int, ...]) -> int | None:
    """Where the block's draws start to decide, given the committed output (None: the block is stale).

    The committed output must extend the block's snapshot output; tokens committed past its base (by plain
    steps) must equal its candidates there, and its draws must reach the first uncommitted position."""
    base, tokens = block.base, block.candidates.tokens
    if tuple(committed[:base]) != block.snapshot.output or len(committed) < base:
        return None
    offset = len(committed) - base
    if offset > len(tokens) or tuple(committed[base:]) != tuple(tokens[:offset]):
        return None
    return offset


def decide_from(snapshot: RoundSnapshot, proposed: Candidates, scored: ScoreOutcome, offset: int) -> Verified:
    """The acceptance rule over the candidates from ``offset`` on, each position with its own draws (the
    round's uniforms at those positions); ``offset = 0`` is ``decide`` itself."""
    if offset == 0:
        return decide(snapshot, proposed, scored)
    tokens, k = proposed.tokens, len(proposed.tokens)
    samples = scored.target_samples
    if len(samples) != k + 1:
        raise MalformedResponseError(f"the target sent {len(samples)} samples for k={k}")
    rest, rest_samples = tokens[offset:], samples[offset:]
    if snapshot.sampling.is_greedy or proposed.proposals is None:
        accepted = accept_exact_match(rest, rest_samples)
        return Verified(tuple(output_tokens(rest, accepted, rest_samples, None)), accepted)
    if len(scored.candidate_target_probs) != k or len(scored.recovered_tokens) != k:
        raise MalformedResponseError(f"the target sent incomplete verification data for k={k}")
    uniforms = acceptance_uniforms(k, generator_for(snapshot.seed(SeedPurpose.ACCEPT))).tolist()
    accepted = accept_speculative(
        scored.candidate_target_probs[offset:], proposed.candidate_draft_probs[offset:], uniforms[offset:]
    )
    recovered = scored.recovered_tokens[offset:]
    return Verified(tuple(output_tokens(rest, accepted, rest_samples, recovered)), accepted)


@dataclass(frozen=True)
class BlockDecision:
    """What applying a verified block does: the tokens committed, and whether the chain after it lives."""

    committed: Committed
    verified: Verified
    continues: bool  # every candidate accepted and the bonus discarded: the next block goes on
    bonus_discarded: bool = False
    offset: int = 0  # the block's first draw that decided (earlier positions: plain steps)


def block_commit(
    block: DraftedBlock, scored: ScoreOutcome, committed: tuple[int, ...], next_started: bool
) -> BlockDecision | None:
    """Applies a verified block to the committed output (None: the block is stale). A fully accepted block
    ends with the target's bonus token only when the next block's drafting had not started."""
    offset = usable_offset(block, committed)
    if offset is None:
        return None
    snapshot = dataclasses.replace(block.snapshot, output=tuple(committed))
    verified = decide_from(block.snapshot, block.candidates, scored, offset)
    rest = len(block.candidates.tokens) - offset
    full = verified.accepted == rest
    if full and next_started:
        verified = Verified(verified.output[:rest], verified.accepted)
    result = commit(snapshot, verified)
    continues = full and next_started and result.finish is None
    return BlockDecision(result, verified, continues, full and next_started, offset)


def decided_margins(scored: ScoreOutcome, offset: int) -> ScoreOutcome:
    """The target's answer seen from ``offset`` on: its greedy top-2 margins start at the first position
    the block decided (``coordinator.loop.round.near_tie_offsets`` reads them from 0)."""
    if not offset:
        return scored
    return dataclasses.replace(scored, top2_logit_margins=scored.top2_logit_margins[offset:])


def run_algorithm(algorithm: AlgorithmName) -> AlgorithmName:
    """The algorithm DSI runs for a request's: SLRS as SLEM (its draft is verified by exact match)."""
    return AlgorithmName.SLEM if algorithm is AlgorithmName.SLRS else algorithm
