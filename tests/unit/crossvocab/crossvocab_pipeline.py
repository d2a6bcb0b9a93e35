"""The full cross-vocabulary pipeline on toy LMs: draft, plan, Score, accept, commit, re-sync, round by round.

``VectorisedRun`` runs many independent generations at once through the batch functions
(``draft_tokens_batch``, TLI's ``restrict_logits`` / ``map_sparse_to_target``, ``score_candidates_batch``,
``count_accepted_*``, ``correction_tokens_batch``). Generations that share a state, draft context or round
plan share the pure work (plans and re-syncs are cached), while every draw is made per generation. The toy
LMs put mass on a few tokens only, so the batch functions see those tokens' columns (for the target, plus
one column with logit -inf standing for every other id, where off-support candidates land): a relabelling
of ids that changes neither the laws nor the draws. ``run_literal`` runs one generation through the
per-sequence functions on full-vocabulary rows (``draft_token`` / ``draft_token_tli``, ``score_candidates``,
``accept_*``, ``output_tokens``), as the services call them.

Generators of a run: the drafter's is seeded with ``seed``, the target's with ``seed + 1``, the
coordinator's with ``seed + 2``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from coordinator.verify.speculative import (
    accept_exact_match,
    accept_speculative,
    acceptance_uniforms,
    correction_tokens_batch,
    count_accepted_exact_match,
    count_accepted_speculative,
    output_tokens,
)
from core.restrict import (
    draft_token_tli,
    has_intersection_mass,
    intersection_mask,
    map_sparse_to_target,
    restrict_logits,
)
from core.sampling import (
    SamplingConfig,
    draft_token,
    draft_tokens_batch,
    score_candidates,
    score_candidates_batch,
)
from tests.unit.crossvocab.crossvocab_lms import NUM_OUTPUT_TOKENS, outcome_code
from tests.unit.crossvocab.crossvocab_methods import (
    OVER_BUDGET,
    PENDING,
    Method,
    Pair,
    Plan,
    Planner,
    SparseProposal,
    State,
)
from tests.unit.verify.verify_pipeline import generators

# Bound on candidates per round used to pack (context, accepted, correction) into one integer key.
_KEY_SLOTS = 64


@dataclass(frozen=True)
class Setup:
    """One configuration of a cross-vocabulary run."""

    pair: Pair
    method: Method
    target_config: SamplingConfig
    draft_config: SamplingConfig
    max_support: int
    k: int
    slrs_budget: int = 1 << 16

    def planner(self) -> Planner:
        return Planner(self.pair, self.method, self.k, self.slrs_budget)


@dataclass(frozen=True)
class RoundCounts:
    """What the rounds of a run did, summed over its generations."""

    rounds: int = 0
    rejected: int = 0  # rounds that rejected a candidate
    rejected_without_pending: int = 0  # of those, rounds whose drafter view spelled all committed text
    held_back: int = 0  # rounds whose drafted bytes ended inside a character (SLEM plans)
    pending_fallback: int = 0  # SLRS rounds run as SLEM because the drafter's view lacked pending bytes
    budget_fallback: int = 0  # SLRS rounds run as SLEM because they were over the enumeration budget


@dataclass(frozen=True)
class RunResult:
    """Outcomes of N generations and what their rounds did."""

    outcomes: np.ndarray  # [N] codes of the first NUM_OUTPUT_TOKENS target tokens (``outcome_code``)
    first_accepted: np.ndarray  # [N] candidates accepted in the first round
    first_candidates: np.ndarray  # [N] candidates proposed in the first round
    counts: RoundCounts


@dataclass(frozen=True)
class DraftDraws:
    """One drafting step of n generations."""

    tokens: np.ndarray  # [n] drafter ids
    drafted: np.ndarray  # [n] bool: False where no draft token could be proposed (TLI, Z = 0)
    support_ids: Tensor  # [n, m] proposal ids: drafter ids, target ids for TLI (padding where probs = 0)
    support_probs: Tensor  # [n, m]


def draft_step(setup: Setup, logits: Tensor, generator: torch.Generator) -> DraftDraws:
    """Draws one draft token per row from the drafter's support logits [n, support]."""
    support = torch.tensor(setup.pair.drafter.support, dtype=torch.int64)
    if setup.method is Method.TLI:
        return _draft_step_tli(setup, support, logits, generator)
    batch = draft_tokens_batch(logits, setup.draft_config, setup.max_support, generator)
    drafted = np.ones(logits.shape[0], dtype=bool)
    return DraftDraws(support[batch.tokens].numpy(), drafted, support[batch.support_ids], batch.support_probs)


def _draft_step_tli(
    setup: Setup,
    support: Tensor,  # [columns] int64 drafter ids of the logit columns
    logits: Tensor,  # [n, columns]
    generator: torch.Generator,
) -> DraftDraws:
    """TLI drafting: restrict to the intersection, draft, map the proposal into target ids."""
    mapping = setup.pair.drafter_to_target
    restricted = restrict_logits(logits, intersection_mask(mapping, setup.pair.drafter_vocab.size)[support])
    has_mass = has_intersection_mass(restricted)
    if not bool(has_mass.any()):  # as ``draft_token_tli``: no draft token, no draw
        empty = torch.zeros((logits.shape[0], 1), dtype=torch.int64)
        return DraftDraws(np.zeros(logits.shape[0], dtype=np.int64), has_mass.numpy(), empty, empty.float())
    safe_logits = torch.where(has_mass.unsqueeze(-1), restricted, 0.0)
    batch = draft_tokens_batch(safe_logits, setup.draft_config, setup.max_support, generator)
    probs = batch.support_probs * has_mass.unsqueeze(-1)
    target_ids, probs = map_sparse_to_target(support[batch.support_ids], probs, mapping)
    return DraftDraws(support[batch.tokens].numpy(), has_mass.numpy(), target_ids, probs)


def _positive(ids: Tensor, probs: Tensor) -> SparseProposal:
    keep = probs > 0
    return SparseProposal(tuple(int(i) for i in ids[keep]), tuple(float(p) for p in probs[keep]))


class VectorisedRun:
    """Runs independent generations of one ``Setup`` in lock-step rounds (see the module docstring)."""

    def __init__(self, setup: Setup, seed: int) -> None:
        self.setup = setup
        self.planner = setup.planner()
        self._drafter_gen, self._target_gen, self._coordinator_gen = generators(seed)
        self._states: list[State] = []
        self._state_ids: dict[State, int] = {}
        self._contexts: list[tuple[int, tuple[int, ...]]] = []  # (state id, draft tokens)
        self._context_ids: dict[tuple[int, tuple[int, ...]], int] = {}
        self._proposals: dict[int, SparseProposal] = {}  # the proposal drawn at a context
        self._plans: dict[int, Plan] = {}
        self._commits: dict[int, int] = {}
        self._tensors: dict[int, tuple[Tensor, Tensor, Tensor | None]] = {}
        self._drafter_rows: dict[bytes, Tensor] = {}
        target = setup.pair.target
        self._target_support = np.asarray(target.support, dtype=np.int64)
        # Target id -> column; every off-support id shares the last column.
        self._column_of = np.full(target.vocab.size, len(target.support), dtype=np.int64)
        self._column_of[self._target_support] = np.arange(len(target.support))
        assert len(target.support) < _KEY_SLOTS
        drafter_vocab = setup.pair.drafter_vocab
        self._drafter_text_tokens = np.array(
            [drafter_vocab.is_text_token(i) for i in range(drafter_vocab.size)]
        )

    def state_id(self, state: State) -> int:
        if state not in self._state_ids:
            self._state_ids[state] = len(self._states)
            self._states.append(state)
        return self._state_ids[state]

    def context_id(self, state_id: int, drafts: tuple[int, ...]) -> int:
        key = (state_id, drafts)
        if key not in self._context_ids:
            self._context_ids[key] = len(self._contexts)
            self._contexts.append(key)
        return self._context_ids[key]

    def run(self, num_trials: int) -> RunResult:
        state_ids = np.full(num_trials, self.state_id(State((), ())), dtype=np.int64)
        outcomes = np.full(num_trials, -1, dtype=np.int64)
        first: tuple[np.ndarray, np.ndarray] | None = None
        counts = RoundCounts()
        active = np.arange(num_trials)
        while active.size:
            contexts = self._draft(state_ids[active])
            accepted, corrections, proposed = self._verify(contexts)
            counts = self._count(counts, state_ids[active], contexts, accepted < proposed)
            if first is None:
                first = (accepted, proposed)
            state_ids[active] = self._commit(contexts, accepted, corrections)
            codes = self._outcome_codes(state_ids[active])
            done = codes >= 0
            outcomes[active[done]] = codes[done]
            active = active[~done]
        assert first is not None
        return RunResult(outcomes, first[0], first[1], counts)

    def _outcome_codes(self, states: np.ndarray) -> np.ndarray:  # [b] state ids -> [b] codes, -1 if not done
        unique, inverse = np.unique(states, return_inverse=True)
        codes = []
        for state_id in unique.tolist():
            committed = self._states[state_id].committed
            done = len(committed) >= NUM_OUTPUT_TOKENS
            codes.append(outcome_code(self.setup.pair.target, committed[:NUM_OUTPUT_TOKENS]) if done else -1)
        return np.asarray(codes, dtype=np.int64)[inverse]

    def _count(
        self, counts: RoundCounts, states: np.ndarray, contexts: np.ndarray, rejected: np.ndarray
    ) -> RoundCounts:
        """Adds one round of the active generations to ``counts``."""
        unique_states, state_index = np.unique(states, return_inverse=True)
        pending = np.array([bool(self._states[s].pending) for s in unique_states.tolist()])[state_index]
        unique, inverse = np.unique(contexts, return_inverse=True)
        plans = [self._plans[c] for c in unique.tolist()]
        held_back = np.array([bool(plan.held_back) for plan in plans])[inverse]
        fallback = np.array([plan.fallback for plan in plans])[inverse]
        return RoundCounts(
            counts.rounds + len(contexts),
            counts.rejected + int(rejected.sum()),
            counts.rejected_without_pending + int((rejected & ~pending).sum()),
            counts.held_back + int(held_back.sum()),
            counts.pending_fallback + int((fallback == PENDING).sum()),
            counts.budget_fallback + int((fallback == OVER_BUDGET).sum()),
        )

    def _draft(self, states: np.ndarray) -> np.ndarray:  # [b] state ids -> [b] final context ids
        """Drafts up to k tokens per generation on the drafter's own view; returns the draft contexts."""
        unique_states, inverse = np.unique(states, return_inverse=True)
        contexts = np.array([self.context_id(int(s), ()) for s in unique_states], dtype=np.int64)[inverse]
        drafting = np.ones(len(states), dtype=bool)
        for _ in range(self.setup.k):
            rows = np.flatnonzero(drafting)
            if not rows.size:
                break
            unique, first, inverse = np.unique(contexts[rows], return_index=True, return_inverse=True)
            table = torch.stack([self._drafter_logits(int(c)) for c in unique])
            draws = draft_step(self.setup, table[torch.from_numpy(inverse)], self._drafter_gen)
            for context, row in zip(unique.tolist(), first.tolist(), strict=True):
                if draws.drafted[row] and context not in self._proposals:
                    self._proposals[context] = _positive(draws.support_ids[row], draws.support_probs[row])
            ok = draws.drafted
            contexts[rows[ok]] = self._extend(contexts[rows[ok]], draws.tokens[ok])
            stop = ~ok | ~self._drafter_text_tokens[draws.tokens]
            drafting[rows[stop]] = False
        return contexts

    def _drafter_logits(self, context: int) -> Tensor:  # [drafter support] float32
        state_id, drafts = self._contexts[context]
        text = self.planner.drafter_text(self._states[state_id], drafts)
        if text not in self._drafter_rows:
            logits = self.setup.pair.drafter.support_logits(text)
            self._drafter_rows[text] = torch.tensor(logits, dtype=torch.float32)
        return self._drafter_rows[text]

    def _extend(self, contexts: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """Context ids after appending one draft token to each context."""
        keys = contexts * self.setup.pair.drafter_vocab.size + tokens
        unique, inverse = np.unique(keys, return_inverse=True)
        size = self.setup.pair.drafter_vocab.size
        extended = []
        for key in unique.tolist():
            state_id, drafts = self._contexts[key // size]
            extended.append(self.context_id(state_id, (*drafts, key % size)))
        return np.asarray(extended, dtype=np.int64)[inverse]

    def _plan(self, context: int) -> Plan:
        if context not in self._plans:
            state_id, drafts = self._contexts[context]
            prefixes = [self._context_ids[(state_id, drafts[:i])] for i in range(len(drafts))]
            proposals = [self._proposals[c] for c in prefixes]
            self._plans[context] = self.planner.plan(self._states[state_id], drafts, proposals)
        return self._plans[context]

    def _verify(self, contexts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(accepted, correction column, candidate count) per generation.

        Plans are grouped by mode (exact match or speculative) and candidate count, so each group is one
        ``score_candidates_batch`` call with a common k.
        """
        unique, inverse = np.unique(contexts, return_inverse=True)
        plans = [self._plan(int(c)) for c in unique]
        groups = np.array([(plan.draft_rows is None) * _KEY_SLOTS + len(plan.candidates) for plan in plans])
        accepted = np.zeros(len(contexts), dtype=np.int64)
        corrections = np.zeros(len(contexts), dtype=np.int64)
        for group in np.unique(groups).tolist():
            members = np.flatnonzero(groups == group)
            slot = np.full(len(unique), -1, dtype=np.int64)
            slot[members] = np.arange(members.size)
            rows = np.flatnonzero(slot[inverse] >= 0)
            tensors = [self._round_tensors(int(unique[i])) for i in members.tolist()]
            accepted[rows], corrections[rows] = self._score_group(tensors, slot[inverse[rows]])
        counts = np.array([len(plan.candidates) for plan in plans], dtype=np.int64)[inverse]
        return accepted, corrections, counts

    def _score_group(
        self, tensors: Sequence[tuple[Tensor, Tensor, Tensor | None]], plan_of_row: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Score and acceptance for rows whose plans share a mode and a candidate count k."""
        index = torch.from_numpy(plan_of_row)
        candidates = torch.stack([t[0] for t in tensors])[index]  # [n, k]
        logits = torch.stack([t[1] for t in tensors])[index]  # [n, k+1, columns]
        dense = [t[2] for t in tensors if t[2] is not None]  # all or none: the group shares its mode
        draft_probs = torch.stack(dense)[index] if dense else None  # [n, k, columns]
        score = score_candidates_batch(
            logits, candidates, draft_probs, self.setup.target_config, self._target_gen
        )
        if draft_probs is None:
            accepted = count_accepted_exact_match(candidates, score.target_samples)
        else:
            n, k = candidates.shape
            uniforms = acceptance_uniforms(n * k, self._coordinator_gen).reshape(n, k)
            candidate_draft_probs = draft_probs.gather(-1, candidates.unsqueeze(-1)).squeeze(-1)
            accepted = count_accepted_speculative(
                score.candidate_target_probs, candidate_draft_probs, uniforms
            )
        corrections = correction_tokens_batch(accepted, score.target_samples, score.recovered_tokens)
        assert bool((corrections < len(self._target_support)).all()), (
            "a correction outside the target support"
        )
        return accepted.numpy(), corrections.numpy()

    def _round_tensors(self, context: int) -> tuple[Tensor, Tensor, Tensor | None]:
        """(candidate columns [k], target logits [k+1, columns], draft_probs [k, columns] or None)."""
        if context not in self._tensors:
            state_id, _ = self._contexts[context]
            plan = self._plans[context]
            committed = self._states[state_id].committed
            target = self.setup.pair.target
            texts = [
                target.vocab.bytes_of((*committed, *plan.candidates[:i]))
                for i in range(len(plan.candidates) + 1)
            ]
            logits = torch.tensor(
                [(*target.support_logits(t), -math.inf) for t in texts], dtype=torch.float32
            )
            columns = torch.from_numpy(self._columns(plan.candidates))
            dense = None if plan.draft_rows is None else self._dense(plan.draft_rows, logits.shape[-1])
            self._tensors[context] = (columns, logits, dense)
        return self._tensors[context]

    def _columns(self, tokens: Sequence[int]) -> np.ndarray:  # [len(tokens)] int64
        return self._column_of[np.asarray(tokens, dtype=np.int64)]

    def _dense(self, rows: Sequence[SparseProposal], columns: int) -> Tensor:  # [k, columns]
        dense = np.zeros((len(rows), columns), dtype=np.float32)
        for row, proposal in zip(dense, rows, strict=True):
            np.add.at(row, self._columns(proposal.ids), np.asarray(proposal.probs, dtype=np.float32))
        return torch.from_numpy(dense)

    def _commit(self, contexts: np.ndarray, accepted: np.ndarray, corrections: np.ndarray) -> np.ndarray:
        """State ids after committing each generation's output tokens and re-syncing its drafter."""
        keys = (contexts * _KEY_SLOTS + accepted) * _KEY_SLOTS + corrections
        unique, inverse = np.unique(keys, return_inverse=True)
        states = []
        for key in unique.tolist():
            if key not in self._commits:
                context, rest = divmod(key, _KEY_SLOTS * _KEY_SLOTS)
                num_accepted, column = divmod(rest, _KEY_SLOTS)
                state_id, drafts = self._contexts[context]
                output = (*self._plans[context].candidates[:num_accepted], int(self._target_support[column]))
                new_state = self.planner.commit(self._states[state_id], drafts, output)
                self._commits[key] = self.state_id(new_state)
            states.append(self._commits[key])
        return np.asarray(states, dtype=np.int64)[inverse]


def run_literal(setup: Setup, seed: int) -> list[int]:
    """One generation through the per-sequence functions; returns its first NUM_OUTPUT_TOKENS target ids."""
    planner = setup.planner()
    drafter_gen, target_gen, coordinator_gen = generators(seed)
    state = State((), ())
    while len(state.committed) < NUM_OUTPUT_TOKENS:
        drafts, proposals = _draft_literal(setup, planner, state, drafter_gen)
        plan = planner.plan(state, drafts, proposals)
        output = _verify_literal(setup, state, plan, target_gen, coordinator_gen)
        state = planner.commit(state, drafts, output)
    return list(state.committed[:NUM_OUTPUT_TOKENS])


def _draft_literal(
    setup: Setup, planner: Planner, state: State, generator: torch.Generator
) -> tuple[list[int], list[SparseProposal]]:
    drafts: list[int] = []
    proposals: list[SparseProposal] = []
    for _ in range(setup.k):
        logits = setup.pair.drafter.full_logits(planner.drafter_text(state, drafts))
        if setup.method is Method.TLI:
            tli = draft_token_tli(
                logits, setup.pair.drafter_to_target, setup.draft_config, setup.max_support, generator
            )
            if tli is None:
                break
            token, drafted = tli.drafter_token, tli.drafted
        else:
            drafted = draft_token(logits, setup.draft_config, setup.max_support, generator)
            token = drafted.token
        drafts.append(token)
        proposals.append(_positive(drafted.support_ids, drafted.support_probs))
        if not setup.pair.drafter_vocab.is_text_token(token):
            break
    return drafts, proposals


def _verify_literal(
    setup: Setup, state: State, plan: Plan, target_gen: torch.Generator, coordinator_gen: torch.Generator
) -> list[int]:
    target = setup.pair.target
    candidates = list(plan.candidates)
    texts = [target.vocab.bytes_of([*state.committed, *candidates[:i]]) for i in range(len(candidates) + 1)]
    logits = torch.stack([target.full_logits(text) for text in texts])
    candidate_tensor = torch.tensor(candidates, dtype=torch.int64)
    if plan.draft_rows is None:
        score = score_candidates(logits, candidate_tensor, None, setup.target_config, target_gen)
        accepted = accept_exact_match(candidate_tensor, score.target_samples)
        return output_tokens(candidates, accepted, score.target_samples.tolist(), None)
    dense = torch.zeros((len(candidates), target.vocab.size), dtype=torch.float32)
    for row, proposal in zip(dense, plan.draft_rows, strict=True):
        row[list(proposal.ids)] += torch.tensor(proposal.probs, dtype=torch.float32)
    score = score_candidates(logits, candidate_tensor, dense, setup.target_config, target_gen)
    candidate_draft_probs = dense[torch.arange(len(candidates)), candidate_tensor]
    uniforms = acceptance_uniforms(len(candidates), coordinator_gen)
    accepted = accept_speculative(score.candidate_target_probs, candidate_draft_probs, uniforms)
    assert score.recovered_tokens is not None
    return output_tokens(candidates, accepted, score.target_samples.tolist(), score.recovered_tokens.tolist())
