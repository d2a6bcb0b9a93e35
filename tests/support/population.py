"""Many independent runs of one request through the product's round, at once: the law tests' engine.

A population of trials (the same request with different seeds) runs in lock-step rounds through the
round's pure functions of ``coordinator.loop.round``, wired as ``run_round`` and the runner wire them:
``drafter_window_full`` / ``draft_budget`` / ``drafts_this_round`` -> ``draft_call`` -> drafter ->
``candidates`` -> ``score_call`` -> target -> ``decide`` -> ``commit`` -> ``next_view``. Toy models stand in
for the two services and draw with the model service's own math: ``core.drafting.draft_rows`` (the stop
rule and TLI's mask included) and ``core.sampling.score_candidates_batch``, for all trials at once.

Speed without a second implementation of the round: the deterministic functions run once per distinct
input (trials in the same state share ``draft_call``; trials with the same draft share ``candidates`` and
``score_call``; the same output shares ``commit`` and ``next_view``), while the random steps run per trial:
the services' draws (batched, one generator per service) and ``decide``, called for every trial with its
own snapshot (its own request seed and round), so each trial draws its own acceptance uniforms. Toy logits
are computed over each LM's ``support`` (and, for the target, one more column standing for every other
id, where off-support candidates land): a relabelling of columns that changes no law.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import Tensor

from coordinator.loop.round import (
    Committed,
    ModelCalls,
    Verified,
    candidates,
    commit,
    decide,
    draft_budget,
    draft_call,
    drafter_window_full,
    drafts_this_round,
    next_view,
    run_round,
    score_call,
)
from coordinator.loop.snapshot import DrafterView, RequestFrame, RoundSnapshot
from coordinator.loop.translate import EMPTY, Candidates, UnusableDraftError, drafted_bytes
from coordinator.vocab import draft_continuation
from core.disco.classifier import StopRule
from core.drafting import DraftRule, Drafts, draft_rows
from core.modelcalls import DraftCall, DraftOutcome, ForwardStats, ScoreCall, ScoreOutcome, SparseProbs
from core.sampling import ScoreResult, score_candidates_batch, sparse_to_dense
from services.model.masks import mask_from_bitmap
from tests.support.frames import first_snapshot, with_seed
from tests.support.toy_lm import ToyLM

DEFAULT_MAX_SUPPORT = 8
NO_STATS = ForwardStats()


@dataclass(frozen=True, eq=False)
class LawCase:
    """One request to run many times: its frame (each trial gets its own seed), toy models and k."""

    frame: RequestFrame
    target: ToyLM
    drafter: ToyLM | None
    k: int
    confidence_threshold: float = 0.0
    # A deterministic drafter on domain types (a model-free lookup drafter) in place of ``drafter``:
    # called once per distinct Draft call, its draft is every trial's in that state.
    lookup: Callable[[DraftCall], DraftOutcome] | None = None
    # A stop rule over each draft token's features (``core.disco``) the drafter applies, as a stop
    # classifier named by the Draft would be
    stop_rule: StopRule | None = None


@dataclass
class RoundCounts:
    """What the rounds of a population did, summed over its trials."""

    rounds: int = 0
    rejected: int = 0  # rounds that rejected a candidate
    rejected_without_pending: int = 0  # of those, rounds whose drafter view spelled all committed text
    pending: int = 0  # rounds that began with committed bytes the drafter could not see yet
    held_back: int = 0  # drafts whose text (after those bytes) ended inside a character
    over_budget: int = 0  # SLRS rounds verified as SLEM because of their enumeration
    fallbacks: int = 0  # rounds whose draft could not be used (the request went on target-only)
    short_drafts: int = 0  # drafts that ended before the round's k (a stop rule, no mask mass)


@dataclass(frozen=True)
class Population:
    outputs: list[tuple[int, ...]]  # each trial's output tokens
    first_accepted: np.ndarray  # [trials] candidates accepted in the first round
    first_candidates: np.ndarray  # [trials] candidates of the first round
    counts: RoundCounts


@dataclass(frozen=True)
class _State:
    output: tuple[int, ...]
    view: DrafterView | None
    drafting: bool


@dataclass
class _Plan:
    """A state's round before drafting: its snapshot and Draft call (None: no draft this round)."""

    snapshot: RoundSnapshot
    call: DraftCall | None
    entries: dict[tuple[int, ...], int] = field(default_factory=dict)  # draft columns -> _Drafted


@dataclass
class _Drafted:
    """A state's round after drafting: the draft, its candidates and the target's call."""

    state: int
    outcome: DraftOutcome | None
    candidates: Candidates
    fallback: str  # why the draft could not be used ("": it could)
    score: int  # index of the Score call
    held_back: bool  # the drafted text ends inside a character
    short: bool  # the draft ended before the round's k
    commits: dict[tuple[int, ...], tuple[Committed, int]] = field(default_factory=dict)


@dataclass
class _Score:
    call: ScoreCall
    logits: Tensor  # [k+1, target columns]
    candidate_columns: Tensor  # [k] int64
    draft_probs: Tensor | None  # [k, target columns]; None: exact match


def run_requests(case: LawCase, calls: ModelCalls, seeds: Sequence[int]) -> list[tuple[int, ...]]:
    """The request once per seed through ``run_round`` itself (its own seeded draws), applying each
    round's result as the runner does; returns the outputs."""

    async def one(seed: int) -> tuple[int, ...]:
        snapshot = first_snapshot(with_seed(case.frame, seed))
        while True:
            result = await run_round(snapshot, case.k, case.confidence_threshold, calls)
            assert not result.fallback, result.fallback
            output = (*snapshot.output, *result.committed.tokens)
            if result.committed.finish is not None:
                return output
            view = next_view(snapshot, result.drafted, result.committed.tokens)
            snapshot = replace(snapshot, round_index=snapshot.round_index + 1, output=output, view=view)

    async def every() -> list[tuple[int, ...]]:
        return [await one(seed) for seed in seeds]

    return asyncio.run(every())


class PopulationRun:
    """Runs the trials of one ``LawCase`` (see the module docstring)."""

    def __init__(self, case: LawCase) -> None:
        self.case = case
        frame = case.frame
        self._start = first_snapshot(frame)
        self._states: list[_State] = []
        self._state_ids: dict[_State, int] = {}
        self._plans: dict[int, _Plan] = {}
        self._drafted: list[_Drafted] = []
        self._scores: list[_Score] = []
        self._score_ids: dict[tuple[object, ...], int] = {}
        self._target = _Columns(case.target, extra=True)
        self._drafter = None if case.drafter is None else _Columns(case.drafter, extra=False)
        self._mask: Tensor | None = None
        if frame.alignment is not None and frame.drafter is not None and self._drafter is not None:
            mask = mask_from_bitmap(
                frame.alignment.mask_bitmap, frame.drafter.vocab_size, torch.device("cpu")
            )
            self._mask = mask[list(self._drafter.ids)]

    def _state_id(self, state: _State) -> int:
        if state not in self._state_ids:
            self._state_ids[state] = len(self._states)
            self._states.append(state)
        return self._state_ids[state]

    def run(self, trials: int, seed: int) -> Population:
        """``trials`` runs of the request, with request seeds ``seed * 2**32 + trial``."""
        frames = [with_seed(self.case.frame, (seed << 32) + trial) for trial in range(trials)]
        drafter_gen = torch.Generator().manual_seed(seed)
        target_gen = torch.Generator().manual_seed(seed + 1)
        start = self._start
        states = np.full(trials, self._state_id(_State((), start.view, start.drafting)), dtype=np.int64)
        outputs: list[tuple[int, ...]] = [()] * trials
        first_accepted = np.zeros(trials, dtype=np.int64)
        first_candidates = np.zeros(trials, dtype=np.int64)
        counts = RoundCounts()
        active = np.arange(trials)
        round_index = 0
        while active.size:
            entries = self._draft(states[active], drafter_gen)
            scored = self._score([self._drafted[e].score for e in entries], target_gen)
            done = np.zeros(active.size, dtype=bool)
            for row, (trial, entry_id) in enumerate(zip(active.tolist(), entries, strict=True)):
                entry = self._drafted[entry_id]
                state = self._states[entry.state]
                snapshot = RoundSnapshot(frames[trial], round_index, state.output, state.view, state.drafting)
                verified = decide(snapshot, entry.candidates, scored[row])
                committed, next_state = self._commit(entry, verified)
                proposed = len(entry.candidates.tokens)
                _count(counts, state, entry, rejected=verified.accepted < proposed)
                if round_index == 0:
                    first_accepted[trial], first_candidates[trial] = verified.accepted, proposed
                if committed.finish is not None:
                    outputs[trial] = (*state.output, *committed.tokens)
                    done[row] = True
                else:
                    states[trial] = next_state
            active = active[~done]
            round_index += 1
        return Population(outputs, first_accepted, first_candidates, counts)

    def _plan(self, state_id: int) -> _Plan:
        """The state's snapshot, k and Draft call, as the runner and ``run_round`` decide them."""
        if state_id not in self._plans:
            state = self._states[state_id]
            snapshot = RoundSnapshot(self.case.frame, 0, state.output, state.view, state.drafting)
            if drafter_window_full(snapshot):  # the runner falls back before the round
                snapshot = replace(snapshot, drafting=False)
            k = min(self.case.k, draft_budget(snapshot))
            call = None
            if k > 0 and drafts_this_round(snapshot):
                call = draft_call(snapshot, k, self.case.confidence_threshold)
            self._plans[state_id] = _Plan(snapshot, call)
        return self._plans[state_id]

    def _draft(self, states: np.ndarray, generator: torch.Generator) -> list[int]:
        """Each row's ``_Drafted`` entry; drafts are drawn for all rows whose Draft calls differ only in
        their contexts at once."""
        unique, inverse = np.unique(states, return_inverse=True)
        plans = [self._plan(int(s)) for s in unique]
        entries = np.zeros(len(states), dtype=np.int64)
        groups: dict[tuple[object, ...], list[int]] = {}
        for index, plan in enumerate(plans):
            if plan.call is None:
                entries[inverse == index] = self._entry(int(unique[index]), plan, ())
            elif self.case.lookup is not None:
                looked_up = self.case.lookup(plan.call)
                entry = self._entry(int(unique[index]), plan, looked_up.draft_tokens, looked_up=looked_up)
                entries[inverse == index] = entry
            else:
                call = plan.call
                signature = (call.max_draft_tokens, call.token_mask_id, call.stop_token_ids, call.max_support)
                groups.setdefault(signature, []).append(index)
        for members in groups.values():
            rows = np.flatnonzero(np.isin(inverse, members))
            calls = [plans[i].call for i in inverse[rows].tolist()]
            drafts = self._draw([c for c in calls if c is not None], generator)
            lengths, tokens = drafts.lengths.tolist(), drafts.tokens.tolist()
            for index, row in enumerate(rows.tolist()):
                member = int(inverse[row])
                columns = tuple(tokens[index][: lengths[index]])
                entries[row] = self._entry(int(unique[member]), plans[member], columns, drafts, index)
        return [int(e) for e in entries]

    def _draw(self, calls: Sequence[DraftCall], generator: torch.Generator) -> Drafts:
        """The drafter's draws for one row per call (``core.drafting``, in the drafter's columns)."""
        drafter = self._drafter
        assert drafter is not None and calls
        call = calls[0]
        current = np.array([drafter.context_id(c.context.tokens) for c in calls], dtype=np.int64)

        def advance(rows: Tensor, tokens: Tensor) -> Tensor:
            chosen = rows.numpy()
            current[chosen] = drafter.children(current[chosen], tokens.numpy())
            return drafter.logits(current[chosen])

        return draft_rows(
            drafter.logits(current),
            advance,
            DraftRule(
                call.max_draft_tokens,
                drafter.columns_of(call.stop_token_ids),
                call.confidence_threshold,
                stop_classifier=self.case.stop_rule,
            ),
            config=call.sampling,
            max_support=call.max_support or DEFAULT_MAX_SUPPORT,
            generator=generator,
            mask=self._mask if call.token_mask_id else None,
        )

    def _entry(
        self,
        state_id: int,
        plan: _Plan,
        columns: tuple[int, ...],
        drafts: Drafts | None = None,
        row: int = 0,
        *,
        looked_up: DraftOutcome | None = None,
    ) -> int:
        """The ``_Drafted`` entry of a state and its draft (``columns`` in the drafter's columns, or a
        lookup drafter's ``looked_up`` draft in ids)."""
        if columns in plan.entries:
            return plan.entries[columns]
        outcome, proposed, fallback = looked_up, EMPTY, ""
        if plan.call is not None:
            if outcome is None:
                assert drafts is not None and self._drafter is not None
                outcome = self._drafter.outcome(drafts, row)
            try:
                proposed = candidates(plan.snapshot, plan.call, outcome)
            except UnusableDraftError as exc:
                proposed, fallback = EMPTY, str(exc)
        held_back = _held_back(plan.snapshot, outcome)
        short = (
            outcome is not None
            and plan.call is not None
            and len(outcome.draft_tokens) < plan.call.max_draft_tokens
        )
        entry = _Drafted(
            state_id, outcome, proposed, fallback, self._score_id(plan.snapshot, proposed), held_back, short
        )
        self._drafted.append(entry)
        plan.entries[columns] = len(self._drafted) - 1
        return plan.entries[columns]

    # --- scoring, committing -----------------------------------------------------------------------

    def _score_id(self, snapshot: RoundSnapshot, proposed: Candidates) -> int:
        call = score_call(snapshot, proposed)
        vocab = self.case.target.vocab_size
        assert all(0 <= t < vocab for t in call.candidate_tokens), (
            f"candidates outside the vocabulary: {call}"
        )
        key = (call.context.tokens, call.candidate_tokens, call.draft_probs)
        if key not in self._score_ids:
            target = self._target
            k = len(call.candidate_tokens)
            logits = torch.stack(
                [target.row((*call.context.tokens, *call.candidate_tokens[:i])) for i in range(k + 1)]
            )
            columns = torch.tensor([target.column(t) for t in call.candidate_tokens], dtype=torch.int64)
            dense = None if call.draft_probs is None else target.dense(call.draft_probs, logits.dtype)
            self._score_ids[key] = len(self._scores)
            self._scores.append(_Score(call, logits, columns, dense))
        return self._score_ids[key]

    def _score(self, score_ids: Sequence[int], generator: torch.Generator) -> list[ScoreOutcome]:
        """The target's draws for every row, grouped by mode and k (``score_candidates_batch``)."""
        outcomes: list[ScoreOutcome | None] = [None] * len(score_ids)
        ids = np.asarray(score_ids, dtype=np.int64)
        groups: dict[tuple[bool, int], list[int]] = {}
        for score_id in np.unique(ids).tolist():
            entry = self._scores[score_id]
            groups.setdefault((entry.draft_probs is None, len(entry.candidate_columns)), []).append(score_id)
        for members in groups.values():
            rows = np.flatnonzero(np.isin(ids, members))
            slot = {score_id: i for i, score_id in enumerate(members)}
            index = torch.tensor([slot[int(ids[r])] for r in rows], dtype=torch.int64)
            entries = [self._scores[m] for m in members]
            draft_probs = None
            if entries[0].draft_probs is not None:
                draft_probs = torch.stack([e.draft_probs for e in entries if e.draft_probs is not None])[
                    index
                ]
            result = score_candidates_batch(
                torch.stack([e.logits for e in entries])[index],
                torch.stack([e.candidate_columns for e in entries])[index],
                draft_probs,
                entries[0].call.sampling,
                generator,
            )
            for row, outcome in zip(
                rows.tolist(), self._target.outcomes(result, entries[0].call), strict=True
            ):
                outcomes[row] = outcome
        return [o for o in outcomes if o is not None]

    def _commit(self, entry: _Drafted, verified: Verified) -> tuple[Committed, int]:
        """``commit`` and the next state (``next_view`` while the request drafts), once per output."""
        output = verified.output
        if output not in entry.commits:
            plan = self._plans[entry.state]
            state = self._states[entry.state]
            committed = commit(plan.snapshot, verified)
            drafting = plan.snapshot.drafting and not entry.fallback
            view = state.view
            if committed.finish is None and drafting:
                view = next_view(plan.snapshot, entry.outcome, committed.tokens)
            next_state = _State((*state.output, *committed.tokens), view, drafting)
            entry.commits[output] = (committed, self._state_id(next_state))
        return entry.commits[output]


class _Columns:
    """A toy LM's logits over its support columns (the target's: one more, logit -inf, for every other id)."""

    def __init__(self, lm: ToyLM, *, extra: bool) -> None:
        self.lm = lm
        self.ids = np.asarray(lm.support, dtype=np.int64)  # column -> id
        self._column = {int(token): column for column, token in enumerate(self.ids.tolist())}
        self._extra = extra
        self._rows: dict[tuple[int, ...], Tensor] = {}
        self._contexts: list[tuple[int, ...]] = []
        self._context_ids: dict[tuple[int, ...], int] = {}
        self._children: dict[tuple[int, int], int] = {}

    def column(self, token: int) -> int:
        """The column of an id (the extra column for an id outside the support)."""
        column = self._column.get(int(token))
        if column is None:
            assert self._extra, f"id {token} is outside the drafter's support"
            return len(self.ids)
        return column

    def columns_of(self, tokens: frozenset[int]) -> frozenset[int]:
        return frozenset(self._column[t] for t in tokens if t in self._column)

    def row(self, context: tuple[int, ...]) -> Tensor:  # [columns]
        if context not in self._rows:
            row = self.lm.logits(context)[torch.from_numpy(self.ids)]
            if self._extra:
                row = torch.cat([row, torch.full((1,), -torch.inf, dtype=row.dtype)])
            self._rows[context] = row
        return self._rows[context]

    def context_id(self, context: tuple[int, ...]) -> int:
        if context not in self._context_ids:
            self._context_ids[context] = len(self._contexts)
            self._contexts.append(context)
        return self._context_ids[context]

    def children(self, contexts: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """Context ids after appending the token of each column to each context."""
        found = np.empty(len(contexts), dtype=np.int64)
        for index, key in enumerate(zip(contexts.tolist(), columns.tolist(), strict=True)):
            child = self._children.get(key)
            if child is None:
                child = self.context_id((*self._contexts[key[0]], int(self.ids[key[1]])))
                self._children[key] = child
            found[index] = child
        return found

    def logits(self, contexts: np.ndarray) -> Tensor:  # [n, columns]
        unique, inverse = np.unique(contexts, return_inverse=True)
        rows = torch.stack([self.row(self._contexts[c]) for c in unique.tolist()])
        return rows[torch.from_numpy(inverse)]

    def outcome(self, drafts: Drafts, row: int) -> DraftOutcome:
        """One drafted row in ids, as the drafter service would answer."""
        tokens, proposals = drafts.row(row)
        ids = self.ids
        return DraftOutcome(
            tuple(int(ids[t]) for t in tokens),
            tuple(SparseProbs(tuple(int(ids[t]) for t in p.token_ids), p.probs) for p in proposals),
            NO_STATS,
        )

    def dense(self, proposals: Sequence[SparseProbs], dtype: torch.dtype) -> Tensor:  # [k, columns]
        width = len(self.ids) + self._extra
        if not proposals:
            return torch.zeros((0, width), dtype=dtype)
        rows = [
            sparse_to_dense(
                torch.tensor([[self.column(t) for t in p.token_ids]], dtype=torch.int64),
                torch.tensor([p.probs], dtype=dtype),
                width,
            )
            for p in proposals
        ]
        return torch.cat(rows)

    def outcomes(self, result: ScoreResult, call: ScoreCall) -> list[ScoreOutcome]:
        """Each row of a batched Score in ids, as the target service would answer."""
        ids = self.ids
        samples = ids[result.target_samples.numpy()].tolist()
        recovered = None if result.recovered_tokens is None else ids[result.recovered_tokens.numpy()].tolist()
        probs = None if call.sampling.is_greedy else result.candidate_target_probs.tolist()
        return [
            ScoreOutcome(
                candidate_target_probs=() if probs is None else tuple(probs[row]),
                target_samples=tuple(samples[row]),
                recovered_tokens=() if recovered is None else tuple(recovered[row]),
                stats=NO_STATS,
            )
            for row in range(len(samples))
        ]


def _held_back(snapshot: RoundSnapshot, outcome: DraftOutcome | None) -> bool:
    """Whether a cross-vocabulary draft's text (after the pending bytes) ends inside a character."""
    alignment, view = snapshot.frame.alignment, snapshot.view
    if outcome is None or alignment is None or view is None:
        return False
    continuation = draft_continuation(view.pending, drafted_bytes(alignment.drafter, outcome.draft_tokens))
    if not continuation:
        return False
    try:
        continuation.decode("utf-8")
    except UnicodeDecodeError as error:
        return error.end == len(continuation) and error.reason == "unexpected end of data"
    return False


def _count(counts: RoundCounts, state: _State, entry: _Drafted, *, rejected: bool) -> None:
    pending = bool(state.view is not None and state.view.pending)
    counts.rounds += 1
    counts.rejected += rejected
    counts.rejected_without_pending += rejected and not pending
    counts.pending += pending
    counts.held_back += entry.held_back
    counts.over_budget += entry.candidates.slrs_over_budget
    counts.fallbacks += bool(entry.fallback)
    counts.short_drafts += entry.short
