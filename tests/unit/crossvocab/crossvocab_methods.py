"""TLI, SLEM and SLRS as pure round plans: what the coordinator proposes and how it re-syncs the drafter.

A round starts from a ``State``: the committed target tokens, the drafter's token view of the committed
text (after re-sync) and the committed bytes the drafter does not see yet (``pending``: an incomplete
final character). The drafter drafts on its own view; ``Planner.plan`` turns its draft tokens and their
exact sparse proposals into target candidates, with per-candidate proposals in target ids for the
speculative rule (TLI: the mapped restricted proposal; SLRS: psi) or none for exact match (SLEM). After
verification ``Planner.commit`` appends the output tokens and re-syncs the drafter to the committed text.

SLRS falls back to SLEM for a round when the proposer is over its enumeration budget, and when the
drafter's view lacks pending bytes (its drafted bytes would not start where the committed text ends):
both decisions use drafter-side information only, so the output law is unchanged.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from coordinator.verify.slrs import DrafterStep, SlrsProposer, TokenTrie
from coordinator.vocab.canonical import CanonicalVocab
from coordinator.vocab.intersection import build_intersection
from coordinator.vocab.retokenize import draft_continuation, resync_drafter, retokenize_continuation
from tests.unit.crossvocab.crossvocab_lms import TextLM

# Reasons an SLRS round runs as SLEM.
PENDING = "pending"
OVER_BUDGET = "over_budget"


class Method(enum.Enum):
    TLI = "tli"
    SLEM = "slem"
    SLRS = "slrs"


@dataclass(frozen=True)
class State:
    """Where a generation stands between rounds."""

    committed: tuple[int, ...]  # target ids
    view: tuple[int, ...]  # drafter ids spelling the committed text, except ``pending``
    pending: bytes = b""


@dataclass(frozen=True)
class SparseProposal:
    """A draft token's exact sparse proposal (positive entries only): drafter ids, or target ids for TLI."""

    ids: tuple[int, ...]
    probs: tuple[float, ...]


@dataclass(frozen=True)
class Plan:
    """A round's candidates (target ids) and their proposals in target ids; None selects exact match."""

    candidates: tuple[int, ...]
    draft_rows: tuple[SparseProposal, ...] | None
    held_back: bytes = b""  # drafted bytes of an incomplete final character (SLEM)
    fallback: str = ""  # why an SLRS round ran as SLEM: PENDING or OVER_BUDGET


@dataclass(frozen=True, eq=False)
class Pair:
    """A target LM and a drafter LM over two vocabularies, with TLI's map and SLRS's target trie."""

    target: TextLM
    drafter: TextLM
    drafter_to_target: torch.Tensor  # [drafter_vocab] int64
    target_trie: TokenTrie

    @property
    def target_vocab(self) -> CanonicalVocab:
        return self.target.vocab

    @property
    def drafter_vocab(self) -> CanonicalVocab:
        return self.drafter.vocab


def make_pair(target: TextLM, drafter: TextLM) -> Pair:
    intersection = build_intersection(drafter.vocab, target.vocab)
    mapping = torch.from_numpy(intersection.drafter_to_target.copy())
    return Pair(target, drafter, mapping, TokenTrie(target.vocab.token_bytes))


class Planner:
    """Round plans and re-syncs of one pair and method (deterministic; plans are memoised)."""

    def __init__(self, pair: Pair, method: Method, k: int, slrs_budget: int = 1 << 16) -> None:
        self.pair, self.method = pair, method
        self._proposer = SlrsProposer(
            pair.target_trie,
            pair.drafter_vocab.token_bytes,
            max_proposals=k + 2,
            enumeration_budget=slrs_budget,
        )
        # Plans depend on fewer inputs than a whole state: these caches share them between states.
        self._retokenized: dict[tuple[tuple[int, ...], bytes], Plan] = {}
        self._proposed: dict[tuple[tuple[int, ...], tuple[SparseProposal, ...]], Plan | None] = {}

    def drafter_text(self, state: State, drafts: Sequence[int]) -> bytes:
        """What the drafter conditions on: the bytes of its view followed by its draft tokens."""
        return self.pair.drafter_vocab.bytes_of([*state.view, *drafts])

    def plan(self, state: State, drafts: Sequence[int], proposals: Sequence[SparseProposal]) -> Plan:
        """The round's candidates from the draft tokens and the proposals they were drawn from."""
        assert len(drafts) == len(proposals)
        if self.method is Method.SLEM:
            return self._slem(state, drafts)
        if self.method is Method.TLI:
            mapping = self.pair.drafter_to_target
            candidates = tuple(int(mapping[d]) for d in drafts)
            assert all(c >= 0 for c in candidates), "TLI drafted outside the intersection"
            return Plan(candidates, tuple(proposals))
        if state.pending:
            return replace(self._slem(state, drafts), fallback=PENDING)
        slrs = self._slrs(drafts, proposals)
        return replace(self._slem(state, drafts), fallback=OVER_BUDGET) if slrs is None else slrs

    def _slem(self, state: State, drafts: Sequence[int]) -> Plan:
        drafted = self.pair.drafter_vocab.bytes_of(drafts)
        continuation = draft_continuation(state.pending, drafted)
        if continuation is None:
            return Plan((), None)
        key = (state.committed, continuation)
        if key not in self._retokenized:
            result = retokenize_continuation(self.pair.target_vocab, state.committed, continuation)
            self._retokenized[key] = Plan(result.tokens, None, result.held_back)
        return self._retokenized[key]

    def _slrs(self, drafts: Sequence[int], proposals: Sequence[SparseProposal]) -> Plan | None:
        """SLRS from an empty leftover (every round starts re-synced); None when over the budget."""
        key = (tuple(drafts), tuple(proposals))
        if key not in self._proposed:
            steps = [DrafterStep(d, p.ids, p.probs) for d, p in zip(drafts, proposals, strict=True)]
            result = self._proposer.propose(steps)
            candidates = tuple(p.target_token for p in result.proposals)
            psi = tuple(SparseProposal(p.psi_ids, p.psi_probs) for p in result.proposals)
            self._proposed[key] = None if result.over_budget else Plan(candidates, psi)
        return self._proposed[key]

    def commit(self, state: State, drafts: Sequence[int], output: Sequence[int]) -> State:
        """Appends the output tokens and re-syncs the drafter's view (its cache cropped, not rebuilt)."""
        committed = (*state.committed, *output)
        generated = [*state.view, *drafts]
        text = self.pair.target_vocab.bytes_of(committed)
        resync = resync_drafter(self.pair.drafter_vocab, generated, text)
        view = (*generated[: resync.keep], *resync.append)
        assert self.pair.drafter_vocab.bytes_of(view) + resync.pending == text
        return State(committed, view, resync.pending)
