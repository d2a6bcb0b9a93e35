"""A toy model service whose distributions are computed once per context: the law tests at scale.

``CachedToy`` serves Draft and Score like ``tests.support.toy_service.ToyModel`` (same context references
and cache, same stop rule) but computes each context's distributions once, through the production
functions the torch path calls (``core.drafting.draw_within``: mask, warp, truncation, confidence;
``core.sampling.warp_probs`` and ``residual_probs``), memoises them in a ``ToyLaws`` shared by every
request of a test, and draws from them with a ``random.Random`` seeded by the call's seed, by the inverse
CDF ``core.sampling.inverse_cdf`` uses. So its draws follow exactly the laws the torch ``ToyModel`` draws
from (``tests/unit/dsi/test_law_toys.py`` compares them over every context a law test reaches), at a
fraction of the cost; the streams of draws differ (a Mersenne twister, not torch's generator). No stop
classifier and no feature collection.
"""

from __future__ import annotations

import random
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate

import torch

from core.drafting import draw_within
from core.modelcalls import (
    DraftCall,
    DraftOutcome,
    EngineInfo,
    ForwardStats,
    ScoreCall,
    ScoreOutcome,
    SparseProbs,
)
from core.sampling import SamplingConfig, residual_probs, sparse_to_dense, warp_probs
from tests.support.toy_lm import ToyLM
from tests.support.toy_service import DEFAULT_MAX_SUPPORT, ToyModel


@dataclass(frozen=True)
class Law:
    """A discrete law: token ids, their probabilities (the row as computed, zeros dropped), float64 CDF."""

    ids: tuple[int, ...]
    probs: tuple[float, ...]
    cdf: tuple[float, ...]
    prob_of: dict[int, float]

    @staticmethod
    def of(ids: Sequence[int], probs: Sequence[float]) -> Law:
        kept = [(int(t), float(p)) for t, p in zip(ids, probs, strict=True) if p > 0]
        ids_kept, probs_kept = tuple(t for t, _ in kept), tuple(p for _, p in kept)
        return Law(ids_kept, probs_kept, tuple(accumulate(probs_kept)), dict(kept))

    @staticmethod
    def of_row(row: torch.Tensor) -> Law:
        return Law.of(range(row.shape[-1]), row.tolist())

    def draw(self, rng: random.Random) -> int:
        """The first id whose cumulative mass exceeds ``u * total`` (never a zero entry)."""
        index = bisect_right(self.cdf, rng.random() * self.cdf[-1])
        return self.ids[min(index, len(self.ids) - 1)]


@dataclass(frozen=True)
class DraftStep:
    """The drafter after one context: no mass within the mask (``proposal`` None), or its exact sparse
    proposal and each proposable token's confidence (untruncated warped probability)."""

    proposal: Law | None
    confidence: dict[int, float]


@dataclass
class ToyLaws:
    """One toy LM's distributions per (config, mask, context), computed on first use."""

    lm: ToyLM
    max_support: int = DEFAULT_MAX_SUPPORT  # the drafter's, where a call names none
    _drafts: dict[tuple[SamplingConfig, int, str, tuple[int, ...]], DraftStep] = field(default_factory=dict)
    _targets: dict[tuple[SamplingConfig, tuple[int, ...]], Law] = field(default_factory=dict)
    _residuals: dict[tuple[SamplingConfig, tuple[int, ...], SparseProbs], Law] = field(default_factory=dict)

    def draft_step(
        self,
        config: SamplingConfig,
        max_support: int,
        context: Sequence[int],
        mask_id: str = "",
        mask: torch.Tensor | None = None,
    ) -> DraftStep:
        key = (config, max_support, mask_id, tuple(context))
        step = self._drafts.get(key)
        if step is None:
            step = self._drafts[key] = self._draft_step(config, max_support, context, mask)
        return step

    def _draft_step(
        self, config: SamplingConfig, max_support: int, context: Sequence[int], mask: torch.Tensor | None
    ) -> DraftStep:
        logits = self.lm.logits(list(context)).unsqueeze(0)
        generator = torch.Generator().manual_seed(0)  # its draw is not used
        has_mass, batch = draw_within(logits, mask, config, max_support, generator)
        if not bool(has_mass[0]):
            return DraftStep(None, {})
        proposal = Law.of(batch.support_ids[0].tolist(), batch.support_probs[0].tolist())
        assert batch.stop_probs is not None
        stop_probs = batch.stop_probs[0]
        if config.is_greedy:  # confidence: the temperature-1 probability of the argmax
            confidence = {proposal.ids[0]: float(stop_probs[proposal.ids[0]])}
        else:
            confidence = {t: float(stop_probs[t]) for t in proposal.ids}
        return DraftStep(proposal, confidence)

    def target(self, config: SamplingConfig, context: Sequence[int]) -> Law:
        key = (config, tuple(context))
        law = self._targets.get(key)
        if law is None:
            law = self._targets[key] = Law.of_row(self._warped(config, context)[0])
        return law

    def _warped(self, config: SamplingConfig, context: Sequence[int]) -> torch.Tensor:  # [1, vocab]
        return warp_probs(self.lm.logits(list(context)).unsqueeze(0), config)

    def residual(self, config: SamplingConfig, context: Sequence[int], draft: SparseProbs) -> Law:
        """The recovered token's law: normalise(max(target - draft, 0)), the target where none is left."""
        key = (config, tuple(context), draft)
        law = self._residuals.get(key)
        if law is None:
            logits = self.lm.logits(list(context))
            dense = sparse_to_dense(
                torch.tensor([draft.token_ids], dtype=torch.int64),
                torch.tensor([draft.probs], dtype=logits.dtype),
                self.lm.vocab_size,
            )
            residual, _ = residual_probs(self._warped(config, context), dense)
            law = self._residuals[key] = Law.of_row(residual[0])
        return law


class CachedToy(ToyModel):
    """A ``ToyModel`` whose Draft and Score draw from ``laws`` with ``random.Random(call.seed)``."""

    def __init__(self, laws: ToyLaws, info: EngineInfo) -> None:
        super().__init__(laws.lm, info, max_support=laws.max_support)
        self.laws = laws

    def draft(self, call: DraftCall) -> DraftOutcome:
        assert not call.stop_classifier_id and not call.return_features, "not served by the cached toy"
        mask = None
        if call.token_mask_id:
            mask = self.state.masks[call.token_mask_id]
        context = self._context("Draft", call.context)
        count = min(call.max_draft_tokens, self.info.max_context_tokens - len(context))
        rng = random.Random(call.seed)
        support = call.max_support or self.max_support
        sequence = list(context)
        tokens: list[int] = []
        probs: list[SparseProbs] = []
        while len(tokens) < count:
            step = self.laws.draft_step(call.sampling, support, sequence, call.token_mask_id, mask)
            if step.proposal is None:
                break
            proposal = step.proposal
            token = proposal.ids[0] if call.sampling.is_greedy else proposal.draw(rng)
            tokens.append(token)
            probs.append(SparseProbs(proposal.ids, proposal.probs))
            sequence.append(token)
            threshold = call.confidence_threshold
            if token in call.stop_token_ids or (threshold > 0 and step.confidence[token] < threshold):
                break
        self.state.held[call.context.sequence_id] = sequence
        return DraftOutcome(tuple(tokens), tuple(probs), ForwardStats(forwards=len(tokens)))

    def score(self, call: ScoreCall) -> ScoreOutcome:
        tokens = self._context("Score", call.context)
        candidates = list(call.candidate_tokens)
        sequence = tokens + candidates
        config = call.sampling
        rows = [self.laws.target(config, sequence[: len(tokens) + i]) for i in range(len(candidates) + 1)]
        rng = random.Random(call.seed)
        samples = tuple(row.draw(rng) for row in rows)
        recovered: tuple[int, ...] = ()
        if call.draft_probs is not None:
            recovered = tuple(
                self.laws.residual(config, sequence[: len(tokens) + i], draft).draw(rng)
                for i, draft in enumerate(call.draft_probs)
            )
        self.state.held[call.context.sequence_id] = sequence
        probs = tuple(rows[i].prob_of.get(c, 0.0) for i, c in enumerate(candidates))
        return ScoreOutcome(
            candidate_target_probs=() if config.is_greedy else probs,
            target_samples=samples,
            recovered_tokens=recovered,
            stats=ForwardStats(forwards=1, computed_tokens=len(call.context.tokens) + len(candidates)),
        )
