"""The drafter's loop: draft tokens step by step until the draft is long enough or the stop rule says so.

Each step samples one draft token from the exact sparse proposal of ``core.sampling.draft_tokens_batch``,
restricted first to a token mask when there is one (TLI: the logits outside the mask are set to -inf
*before* the warpers, ``core.restrict``). A draft ends

- after ``DraftRule.count`` tokens;
- after a **stop token** (the drafter's end of sequence), a token whose **confidence** (its probability
  under the untruncated warped distribution) is under ``DraftRule.confidence_threshold``, or a token the
  **stop classifier** (DISCO, ``core.disco``) stops after, judging its features
  (``core.disco.features``: computed from the same untruncated distribution). That token is
  *kept* as the last draft token: it was drawn from the shipped proposal, so the target verifies it.
  Dropping it would make whether a position carries a candidate depend on the token drawn there, so a
  candidate's law would no longer be its shipped proposal and verification would be lossy;
- where the mask leaves the drafter no mass (no finite logit): that is known from the logits before any
  draw, so nothing is drawn and the draft ends before that position.

The loop runs b rows at once, each stopping on its own; the model service drafts one row per call (b = 1
draws exactly what a one-row ``draft_token`` would). ``advance(rows, tokens)`` feeds one token to each of
the rows still drafting and returns their next logits; it is never called after a row's last token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from core.disco.classifier import StopRule
from core.disco.features import FEATURE_NAMES, token_features
from core.modelcalls import SparseProbs
from core.restrict import has_intersection_mass, restrict_logits
from core.sampling import DraftBatch, SamplingConfig, draft_tokens_batch

# (rows still drafting [r] int64, the token each just drew [r]) -> their next logits [r, vocab]
Advance = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class DraftRule:
    """How long a draft may get and which drawn tokens end it (kept as its last token)."""

    count: int
    stop_token_ids: frozenset[int] = frozenset()
    confidence_threshold: float = 0.0  # 0: no threshold
    stop_classifier: StopRule | None = None  # DISCO: stops after a token judged by its features
    keep_features: bool = False  # return every draft token's features (collection for training)

    @property
    def needs_features(self) -> bool:
        return self.stop_classifier is not None or self.keep_features

    def stops_after(
        self,
        tokens: Tensor,  # [r] int64
        confidence: Tensor,  # [r]
        features: Tensor | None = None,  # [r, F]; needed with a stop classifier
    ) -> Tensor:  # [r] bool
        """Whether the draft of each row ends with the token it just drew."""
        stop = torch.isin(tokens, torch.tensor(sorted(self.stop_token_ids), dtype=torch.int64))
        if self.confidence_threshold > 0:
            stop |= confidence.to(torch.float64) < self.confidence_threshold
        if self.stop_classifier is not None:
            assert features is not None, "a stop classifier needs the draft tokens' features"
            stop |= self.stop_classifier(features)
        return stop


@dataclass(frozen=True)
class Drafts:
    """The draft of each of b rows; entries at or beyond a row's length are padding."""

    tokens: Tensor  # [b, n] int64, n = the longest draft
    lengths: Tensor  # [b] int64
    support_ids: Tensor  # [b, n, m] int64: each draft token's proposal support
    support_probs: Tensor  # [b, n, m]: its probabilities (0 = padding)
    features: Tensor | None = None  # [b, n, F]: each draft token's stop features (when the rule needs them)

    def row_features(self, index: int) -> tuple[tuple[float, ...], ...]:
        """One row's per-token features (``core.disco.features`` order); () when none were computed."""
        if self.features is None:
            return ()
        length = int(self.lengths[index])
        return tuple(tuple(float(v) for v in token) for token in self.features[index, :length].tolist())

    def row(self, index: int) -> tuple[tuple[int, ...], tuple[SparseProbs, ...]]:
        """One row's draft tokens and their exact sparse proposals (padding removed)."""
        length = int(self.lengths[index])
        tokens = tuple(int(t) for t in self.tokens[index, :length].tolist())
        proposals = []
        rows = zip(self.support_ids[index, :length], self.support_probs[index, :length], strict=True)
        for ids, probs in rows:
            keep = probs > 0
            kept_ids = tuple(int(t) for t in ids[keep].tolist())
            proposals.append(SparseProbs(kept_ids, tuple(float(p) for p in probs[keep].tolist())))
        return tokens, tuple(proposals)


def draw_within(
    logits: Tensor,  # [r, vocab]
    mask: Tensor | None,  # [vocab] bool; None = no restriction
    config: SamplingConfig,
    max_support: int,
    generator: torch.Generator,
) -> tuple[Tensor, DraftBatch]:  # ([r] bool: rows with mass, a batch over those rows)
    """One draft token per row with mass within ``mask``; rows without mass draw nothing.

    Draws as ``draft_tokens_batch`` over the rows with mass (none: no draw at all).
    """
    if mask is None:
        return torch.ones(logits.shape[0], dtype=torch.bool), _draft(logits, config, max_support, generator)
    restricted = restrict_logits(logits, mask)
    has_mass = has_intersection_mass(restricted)
    return has_mass, _draft(restricted[has_mass], config, max_support, generator)


def _draft(
    logits: Tensor,  # [r, vocab]
    config: SamplingConfig,
    max_support: int,
    generator: torch.Generator,
) -> DraftBatch:
    if logits.shape[0] == 0:
        empty = torch.zeros((0, 1), dtype=torch.int64)
        dtype = logits.dtype
        return DraftBatch(empty[:, 0], empty, empty.to(dtype), empty[:, 0].to(dtype), logits[:0].to(dtype))
    return draft_tokens_batch(logits, config, max_support, generator)


def draft_rows(
    logits: Tensor,  # [b, vocab] after each row's context
    advance: Advance,
    rule: DraftRule,
    *,
    config: SamplingConfig,
    max_support: int,
    generator: torch.Generator,
    mask: Tensor | None = None,  # [vocab] bool
) -> Drafts:
    """Drafts up to ``rule.count`` tokens per row (see the module docstring for where a draft ends)."""
    assert logits.dim() == 2, f"logits must be [b, vocab], got {tuple(logits.shape)}"
    b, dtype = logits.shape[0], logits.dtype
    rows = torch.arange(b)
    steps: list[tuple[Tensor, DraftBatch]] = []
    features: list[Tensor] = []
    while rows.numel() and len(steps) < rule.count:
        has_mass, batch = draw_within(logits, mask, config, max_support, generator)
        rows = rows[has_mass]
        if not rows.numel():
            break
        steps.append((rows, batch))
        step_features = None
        if rule.needs_features:
            assert batch.stop_probs is not None
            step_features = token_features(batch.stop_probs, batch.tokens, len(steps) - 1)
            features.append(step_features)
        going = ~rule.stops_after(batch.tokens, batch.confidence, step_features)
        rows = rows[going]
        if rows.numel() and len(steps) < rule.count:
            logits = advance(rows, batch.tokens[going])
    drafts = _collect(b, steps, steps[0][1].support_probs.dtype if steps else dtype)
    if not rule.needs_features:
        return drafts
    stacked = torch.zeros((b, len(steps), len(FEATURE_NAMES)), dtype=torch.float32)
    for index, ((rows_at, _), values) in enumerate(zip(steps, features, strict=True)):
        stacked[rows_at, index] = values
    return replace(drafts, features=stacked)


def _collect(b: int, steps: list[tuple[Tensor, DraftBatch]], dtype: torch.dtype) -> Drafts:
    """Stacks the steps' draws into per-row drafts (a row's steps are contiguous from the first)."""
    width = max((batch.support_ids.shape[1] for _, batch in steps), default=1)
    tokens = torch.zeros((b, len(steps)), dtype=torch.int64)
    lengths = torch.zeros(b, dtype=torch.int64)
    support_ids = torch.zeros((b, len(steps), width), dtype=torch.int64)
    support_probs = torch.zeros((b, len(steps), width), dtype=dtype)
    for index, (rows, batch) in enumerate(steps):
        tokens[rows, index] = batch.tokens
        lengths[rows] += 1
        support_ids[rows, index, : batch.support_ids.shape[1]] = batch.support_ids
        support_probs[rows, index, : batch.support_probs.shape[1]] = batch.support_probs
    return Drafts(tokens, lengths, support_ids, support_probs)
