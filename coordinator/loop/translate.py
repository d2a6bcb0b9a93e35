"""A round's candidates from its draft, per algorithm: what the target verifies (pure functions).

- SD (Leviathan et al., arXiv 2211.17192): the draft tokens themselves with the exact proposal each was
  sampled from, cut before the first proposal that reaches outside the target's vocabulary (padding rows
  of a wider drafter head). That proposal is fixed by the earlier tokens alone, before its own token is
  drawn, so the cut is a lookahead decision and the round stays lossless.

Across vocabularies (Timor et al., "Accelerating LLM Inference with Lossless Speculative Decoding
Algorithms for Heterogeneous Vocabularies", ICML 2025, arXiv 2502.05202) the drafter drafts in its own ids;
the target verifies **candidates** in target ids:

- TLI (Alg. 4): the drafter drafted under the intersection mask, so every draft token and every
  positive-probability entry of its sparse proposal maps to a target id (``drafter_to_target``); the
  mapped proposal is exactly the law the candidate was drawn from and is verified by speculative
  sampling.
- SLEM (Alg. 2): the drafted text (canonical bytes after the committed text's pending end) is
  re-tokenized by the target's tokenizer after the committed target tokens; the candidates are verified
  by exact match, lossless for any drafter sampling. The last candidate is never trimmed: a rejected
  candidate still yields the target's own sample at that position, so a tail that might be an
  incomplete merge costs no output token, and when it matches it adds one.
- SLRS (Alg. 3): the drafter steps (token + exact sparse proposal) run the proposal process of
  ``coordinator.verify.slrs``; candidates are the proposed target tokens, verified by speculative
  sampling against their exact proposal law psi.

Every function here is deterministic in the draft: truncating candidates to a count fixed before the
round keeps each algorithm lossless.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from coordinator.verify.slrs import DrafterStep, SlrsProposer, TokenTrie
from coordinator.vocab import (
    DEFAULT_WINDOW_TOKENS,
    NOT_IN_INTERSECTION,
    CanonicalVocab,
    draft_continuation,
    retokenize_continuation,
)
from coordinator.vocab.utf8 import MAX_CHAR_BYTES
from core.modelcalls import SparseProbs

# Committed target tokens handed to re-tokenization: enough for its look-behind window and for a
# character that started up to MAX_CHAR_BYTES byte tokens back.
LOOK_BEHIND_TOKENS = DEFAULT_WINDOW_TOKENS + 2 * MAX_CHAR_BYTES


class UnusableDraftError(ValueError):
    """A draft breaks the protocol or what its algorithm guarantees (e.g. a TLI token outside the
    intersection): the round verifies nothing of it and the request goes on target-only."""


@dataclass(frozen=True)
class Candidates:
    """Target-id candidates of one round and how to verify them.

    ``proposals`` is None for exact-match verification; otherwise one exact proposal per candidate, and
    ``candidate_draft_probs[i]`` is ``proposals[i]`` at ``tokens[i]`` (float32 values, the wire's width, so
    the target scores the proposal the coordinator accepts with). ``slrs_over_budget`` marks an SLRS round
    verified as SLEM because its enumeration went over budget (``slrs_enumerated`` entries).
    """

    tokens: tuple[int, ...]
    proposals: tuple[SparseProbs, ...] | None
    candidate_draft_probs: tuple[float, ...]
    slrs_over_budget: bool = False
    slrs_enumerated: int = 0

    def truncated(self, count: int) -> Candidates:
        """The first ``count`` candidates (a count fixed before the round keeps every algorithm lossless)."""
        proposals = None if self.proposals is None else self.proposals[:count]
        return Candidates(self.tokens[:count], proposals, self.candidate_draft_probs[:count])


EMPTY = Candidates((), None, ())


def _float32(value: float) -> float:
    return float(np.float32(value))


def text_bytes(vocab: CanonicalVocab, token_ids: Sequence[int]) -> bytes:
    """Canonical bytes of ``token_ids``; special ids and ids beyond the tokenizer contribute nothing."""
    table, size = vocab.token_bytes, vocab.size
    return b"".join(table[i] or b"" for i in token_ids if 0 <= i < size)


def drafted_bytes(vocab: CanonicalVocab, draft_tokens: Sequence[int]) -> bytes:
    """The text a draft spells, up to its first token without text (a stop token ends the text)."""
    parts: list[bytes] = []
    for token in draft_tokens:
        if not vocab.is_text_token(token):
            break
        parts.append(vocab.token_bytes[token] or b"")
    return b"".join(parts)


def look_behind(vocab: CanonicalVocab, context: Sequence[int]) -> list[int]:
    """The end of a committed context that re-tokenization may read (after any id beyond the tokenizer)."""
    tail = list(context[-LOOK_BEHIND_TOKENS:])
    for index in range(len(tail) - 1, -1, -1):
        if not 0 <= tail[index] < vocab.size:
            return tail[index + 1 :]
    return tail


def sd_candidates(
    draft_tokens: Sequence[int], draft_probs: Sequence[SparseProbs], target_vocab_size: int
) -> Candidates:
    """The draft tokens the target can score, with each one's proposal and draft probability (SD)."""
    probs_at: list[float] = []
    for token, proposal in zip(draft_tokens, draft_probs, strict=True):
        if any(i >= target_vocab_size for i in proposal.token_ids):
            break
        prob = sum(p for i, p in zip(proposal.token_ids, proposal.probs, strict=True) if i == token)
        if not prob > 0:
            raise UnusableDraftError(f"the drafter sent draft token {token} with probability {prob}")
        probs_at.append(prob)
    n = len(probs_at)
    if n == 0:  # no draft (a lookup drafter without a match): the round is a plain target step
        return EMPTY
    return Candidates(tuple(draft_tokens[:n]), tuple(draft_probs[:n]), tuple(probs_at))


def tli_candidates(
    draft_tokens: Sequence[int],
    supports: Sequence[tuple[Sequence[int], Sequence[float]]],  # per draft token: (drafter ids, probs)
    drafter_to_target: npt.NDArray[np.int64],  # [drafter_rows]
) -> Candidates:
    """Maps a masked draft and its exact sparse proposals into target ids (TLI)."""
    if len(supports) != len(draft_tokens):
        raise UnusableDraftError(f"{len(draft_tokens)} draft tokens but {len(supports)} distributions")
    rows = drafter_to_target.shape[0]
    tokens: list[int] = []
    proposals: list[SparseProbs] = []
    probs_at: list[float] = []
    for token, (ids, probs) in zip(draft_tokens, supports, strict=True):
        mapped_ids: list[int] = []
        mapped_probs: list[float] = []
        token_prob = 0.0
        for drafter_id, prob in zip(ids, probs, strict=True):
            if prob <= 0:
                continue
            target_id = int(drafter_to_target[drafter_id]) if 0 <= drafter_id < rows else NOT_IN_INTERSECTION
            if target_id == NOT_IN_INTERSECTION:
                raise UnusableDraftError(
                    f"drafter token {drafter_id} has mass but is outside the intersection"
                )
            mapped_ids.append(target_id)
            mapped_probs.append(float(prob))
            if drafter_id == token:
                token_prob += float(prob)
        if not token_prob > 0:
            raise UnusableDraftError(f"draft token {token} has probability {token_prob} in its distribution")
        tokens.append(int(drafter_to_target[token]))
        proposals.append(SparseProbs(tuple(mapped_ids), tuple(mapped_probs)))
        probs_at.append(token_prob)
    return Candidates(tuple(tokens), tuple(proposals), tuple(probs_at))


def slem_candidates(
    drafter: CanonicalVocab,
    target: CanonicalVocab,
    draft_tokens: Sequence[int],
    *,
    pending: bytes,
    target_context: Sequence[int],
    max_candidates: int,
    target_rows: int,
) -> Candidates:
    """The drafted text re-tokenized by the target after its committed tokens (SLEM, exact match).

    ``pending`` is the end of the committed text the drafter did not see; a draft that does not begin
    with it contradicts the committed text and yields no candidates.
    """
    continuation = draft_continuation(pending, drafted_bytes(drafter, draft_tokens))
    if not continuation or max_candidates <= 0:
        return EMPTY
    retokenized = retokenize_continuation(target, look_behind(target, target_context), continuation)
    tokens: list[int] = []
    for token in retokenized.tokens[:max_candidates]:
        if not 0 <= token < target_rows:
            break
        tokens.append(int(token))
    return Candidates(tuple(tokens), None, ())


def slem_covered_drafts(
    drafter: CanonicalVocab,
    target: CanonicalVocab,
    draft_tokens: Sequence[int],
    *,
    pending: bytes,
    accepted_candidates: Sequence[int],
) -> int:
    """How many leading draft tokens a SLEM round verified: those whose text, with the text drafted before
    them, lies inside the committed text's ``pending`` end followed by the accepted candidates' bytes.

    A token without text (a stop token) ends the count: nothing of it was verified.
    """
    covered = pending + text_bytes(target, accepted_candidates)
    spelled = 0
    for count, token in enumerate(draft_tokens):
        if not drafter.is_text_token(token):
            return count
        piece = drafter.token_bytes[token] or b""
        if covered[spelled : spelled + len(piece)] != piece:
            return count
        spelled += len(piece)
    return len(draft_tokens)


@dataclass(frozen=True)
class SlrsCandidates:
    """SLRS's candidates, or ``over_budget`` when the round must be verified another way."""

    candidates: Candidates
    over_budget: bool
    enumerated: int


def slrs_candidates(
    trie: TokenTrie,
    drafter: CanonicalVocab,
    draft_tokens: Sequence[int],
    supports: Sequence[tuple[Sequence[int], Sequence[float]]],  # per draft token: (drafter ids, probs)
    *,
    max_candidates: int,
    enumeration_budget: int,
) -> SlrsCandidates:
    """Target tokens proposed from the drafter steps with their exact proposal law psi (SLRS).

    The process starts from the committed text (no leftover bytes) and ends at a drafter stop token;
    bytes drafted beyond the last proposal are discarded (the drafter is re-synced after the commit).
    """
    if max_candidates <= 0:
        return SlrsCandidates(EMPTY, over_budget=False, enumerated=0)
    steps = [
        DrafterStep(int(token), list(ids), [float(p) for p in probs])
        for token, (ids, probs) in zip(draft_tokens, supports, strict=True)
    ]
    proposer = SlrsProposer(trie, drafter.token_bytes, max_candidates, enumeration_budget)
    result = proposer.propose(steps)
    if result.over_budget:
        return SlrsCandidates(EMPTY, over_budget=True, enumerated=result.enumerated)
    tokens: list[int] = []
    proposals: list[SparseProbs] = []
    probs_at: list[float] = []
    for proposal in result.proposals:
        psi = [_float32(p) for p in proposal.psi_probs]
        tokens.append(proposal.target_token)
        proposals.append(SparseProbs(proposal.psi_ids, tuple(psi)))
        probs_at.append(psi[proposal.psi_ids.index(proposal.target_token)])
    candidates = Candidates(tuple(tokens), tuple(proposals), tuple(probs_at))
    return SlrsCandidates(candidates, over_budget=False, enumerated=result.enumerated)
