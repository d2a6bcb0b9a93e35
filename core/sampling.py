"""Sampling math shared by the drafter and the target: warpers, sparse proposals and the Score step.

Speculative sampling (Leviathan, Kalman, Matias 2023, arXiv 2211.17192; Chen et al. 2023,
arXiv 2302.01318) lets a cheap drafter propose tokens that the target verifies in one forward pass,
with an output law exactly equal to the target's sampling law. The words used in every identifier:

- **draft tokens** (``candidate_tokens`` once sent to the target): tokens proposed by the drafter, each
  sampled from an exact, possibly sparse, proposal distribution ``draft_probs``.
- **accepted tokens**: the leading draft tokens that pass verification.
- **recovered token**: sampled from the residual ``normalize(max(target_probs - draft_probs, 0))`` at
  the first rejected position.
- **bonus token**: sampled from the target's distribution after the last draft token, used when every
  draft token was accepted.
- **output tokens**: accepted tokens followed by the recovered token or the bonus token.

``target_probs`` and ``draft_probs`` are always distributions *after* the warpers (temperature, top-k,
top-p, in that order); the papers' letters p / q are not used because they disagree on which is which.

All randomness comes from an explicit ``torch.Generator``; each function documents its draws, so the
same seed gives the same tokens. Functions take and return tensors only (no I/O); shapes are asserted
on entry and noted as ``# [n, vocab]`` beside every tensor parameter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from core.errors import InvalidArgumentError

# Probability given to padding entries of a sparse proposal (see ``truncate_support``).
PADDING_PROB = 0.0

# Smallest positive temperature. Below it a sampled draw is the argmax unless logits nearly tie (use 0,
# greedy, which is cheaper and deterministic); at or above it logits / temperature stays finite in
# float32 for every logit up to 3e35 in magnitude.
MIN_TEMPERATURE = 1e-3


@dataclass(frozen=True)
class SamplingConfig:
    """Warpers applied to logits before sampling: temperature, then top-k, then top-p.

    ``temperature == 0`` selects greedy decoding (argmax; top-k and top-p are then irrelevant).
    ``top_k == 0`` and ``top_p == 1`` disable those warpers.

    This is the one place the warpers are validated: every request (the coordinator's Generate, the
    model service's Draft and Score) builds one from its ``sampling`` field, so invalid values raise
    ``InvalidArgumentError`` named after that wire field, with the value and the allowed range
    (``"sampling.top_p: must lie in (0, 1] (1 = no top-p), got 0"``).
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        temperature, top_k, top_p = self.temperature, self.top_k, self.top_p
        if not math.isfinite(temperature) or not (temperature == 0 or temperature >= MIN_TEMPERATURE):
            raise InvalidArgumentError(
                "sampling.temperature",
                f"must be 0 (greedy) or a finite number >= {MIN_TEMPERATURE}, got {temperature}",
            )
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            raise InvalidArgumentError(
                "sampling.top_k", f"must be an integer >= 0 (0 = no top-k), got {top_k!r}"
            )
        if not math.isfinite(top_p) or not 0 < top_p <= 1:
            raise InvalidArgumentError("sampling.top_p", f"must lie in (0, 1] (1 = no top-p), got {top_p}")

    @property
    def is_greedy(self) -> bool:
        """Whether this config decodes greedily (temperature 0)."""
        return self.temperature == 0


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _top_k_mask(logits: Tensor, top_k: int) -> Tensor:
    """Masks logits below the k-th largest to -inf (ties with the k-th largest are kept)."""
    kth_largest = torch.topk(logits, top_k, dim=-1).values[:, -1:]
    return logits.masked_fill(logits < kth_largest, -math.inf)


def _top_p_mask(logits: Tensor, top_p: float) -> Tensor:
    """Masks logits outside the smallest most-likely set whose mass is >= top_p (ties at the cut kept)."""
    probs = torch.softmax(logits, dim=-1)
    sorted_probs = torch.sort(probs, dim=-1, descending=True).values
    mass_before = torch.cumsum(sorted_probs.to(torch.float64), dim=-1) - sorted_probs.to(torch.float64)
    num_kept = (mass_before < top_p).sum(dim=-1, keepdim=True).clamp(min=1)
    cutoff = sorted_probs.gather(-1, num_kept - 1)
    keep = (probs >= cutoff) & (probs > 0)
    return logits.masked_fill(~keep, -math.inf)


def warp_probs(
    logits: Tensor,  # [n, vocab]
    config: SamplingConfig,
) -> Tensor:  # [n, vocab]
    """Turns logits into the warped sampling distribution (temperature, top-k, top-p).

    Returns float32 probabilities (float64 if ``logits`` is float64). Top-k keeps every token whose
    logit ties with the k-th largest; top-p keeps the smallest set of most likely tokens whose mass is
    >= ``top_p`` (always the top token; tokens tied with the last kept one are kept too). Greedy configs
    return a one-hot row at ``torch.argmax`` (the first maximum on ties). Logits of -inf are allowed
    (masked tokens) as long as each row has at least one finite logit.
    """
    assert logits.dim() == 2, f"logits must be [n, vocab], got {tuple(logits.shape)}"
    dtype = _compute_dtype(logits.dtype)
    vocab = logits.shape[-1]
    if config.is_greedy:
        one_hot = torch.zeros(logits.shape, dtype=dtype, device=logits.device)
        return one_hot.scatter_(-1, torch.argmax(logits, dim=-1, keepdim=True), 1.0)
    scaled = logits.to(dtype) / config.temperature
    if 0 < config.top_k < vocab:
        scaled = _top_k_mask(scaled, config.top_k)
    if config.top_p < 1:
        scaled = _top_p_mask(scaled, config.top_p)
    return torch.softmax(scaled, dim=-1)


def truncate_support(
    probs: Tensor,  # [n, vocab]
    max_support: int,
) -> tuple[Tensor, Tensor]:  # ([n, m] int64, [n, m]) with m = min(max_support, vocab)
    """Keeps the ``max_support`` most likely tokens per row, sorted by probability descending.

    Rows whose support already fits are returned unchanged (bit for bit); other rows are renormalised
    over the kept tokens (sum 1 up to float rounding; ``sample`` normalises by the row total, so the law
    it draws is exactly proportional to the returned values). When a row has fewer than m positive
    entries, the tail is padding: arbitrary distinct ids with probability ``PADDING_PROB`` (0).
    """
    assert probs.dim() == 2, f"probs must be [n, vocab], got {tuple(probs.shape)}"
    if max_support < 1:
        raise ValueError(f"max_support: must be >= 1, got {max_support}")
    m = min(max_support, probs.shape[-1])
    kept_probs, token_ids = torch.topk(probs, m, dim=-1, sorted=True)
    fits = (probs > 0).sum(dim=-1, keepdim=True) <= m
    kept_mass = kept_probs.sum(dim=-1, keepdim=True)
    renormalised = kept_probs / kept_mass
    return token_ids, torch.where(fits, kept_probs, renormalised)


def sparse_to_dense(
    token_ids: Tensor,  # [n, m] int64
    probs: Tensor,  # [n, m]
    vocab_size: int,
) -> Tensor:  # [n, vocab_size]
    """Scatters sparse distributions into dense rows (repeated ids add up; unlisted ids get 0)."""
    assert token_ids.dim() == 2 and token_ids.shape == probs.shape, (
        f"token_ids and probs must both be [n, m], got {tuple(token_ids.shape)} and {tuple(probs.shape)}"
    )
    dense = torch.zeros((probs.shape[0], vocab_size), dtype=probs.dtype, device=probs.device)
    return dense.scatter_add_(-1, token_ids.to(torch.int64), probs)


def inverse_cdf(
    probs: Tensor,  # [n, vocab] non-negative, positive row totals (need not be normalised)
    uniforms: Tensor,  # [n] float64 in [0, 1)
) -> Tensor:  # [n] int64
    """Per row, the first token whose cumulative mass exceeds ``uniform * row_total`` (float64 CDF).

    A zero-probability token is never returned, even when rounding puts the threshold at the total.
    """
    assert probs.dim() == 2 and uniforms.shape == probs.shape[:1], (
        f"probs must be [n, vocab] and uniforms [n], got {tuple(probs.shape)} and {tuple(uniforms.shape)}"
    )
    n, vocab = probs.shape
    cdf = torch.cumsum(probs.to(torch.float64), dim=-1)
    thresholds = uniforms.to(device=probs.device, dtype=torch.float64) * cdf[:, -1]
    tokens = torch.searchsorted(cdf, thresholds.unsqueeze(-1), right=True).squeeze(-1)
    positions = torch.arange(vocab, device=probs.device).expand(n, vocab)
    last_positive = torch.where(probs > 0, positions, 0).amax(dim=-1)
    return torch.minimum(tokens, last_positive)


def sample(
    probs: Tensor,  # [n, vocab]
    generator: torch.Generator,
) -> Tensor:  # [n] int64
    """Draws one token per row by ``inverse_cdf``.

    Draws exactly ``torch.rand(n, generator=generator, dtype=torch.float64)`` (on the generator's
    device), one uniform per row in row order. Rows need not be normalised (the CDF is scaled by the row
    total) but must be non-negative with positive total. A zero-probability token is never returned.
    """
    assert probs.dim() == 2, f"probs must be [n, vocab], got {tuple(probs.shape)}"
    uniforms = torch.rand(probs.shape[0], generator=generator, dtype=torch.float64, device=generator.device)
    return inverse_cdf(probs, uniforms)


def residual_probs(
    target_probs: Tensor,  # [n, vocab]
    draft_probs: Tensor,  # [n, vocab]
) -> tuple[Tensor, Tensor]:  # ([n, vocab], [n] bool)
    """Returns ``normalize(max(target_probs - draft_probs, 0))`` per row and whether the row had mass.

    Rows without residual mass (``target_probs <= draft_probs`` everywhere, i.e. equal distributions)
    are returned as ``target_probs``; rejection cannot happen there, so the row is never used to recover.
    """
    assert target_probs.dim() == 2 and target_probs.shape == draft_probs.shape, (
        f"target_probs and draft_probs must both be [n, vocab], "
        f"got {tuple(target_probs.shape)} and {tuple(draft_probs.shape)}"
    )
    dtype = torch.promote_types(target_probs.dtype, draft_probs.dtype)
    target = target_probs.to(dtype)
    excess = (target - draft_probs.to(dtype)).clamp(min=0)
    mass = excess.sum(dim=-1, keepdim=True)
    has_mass = mass > 0
    residual = torch.where(has_mass, excess / torch.where(has_mass, mass, 1), target)
    return residual, has_mass.squeeze(-1)


@dataclass(frozen=True)
class ScoreResult:
    """What the target computes for one Score call (leading ``[b]`` dim from ``score_candidates_batch``)."""

    candidate_target_probs: Tensor  # [k]: target_probs[i][candidate_tokens[i]]
    target_samples: Tensor  # [k+1] int64: target_samples[i] ~ target_probs[i]; [k] is the bonus token
    recovered_tokens: Tensor | None  # [k] int64: residual samples; None in exact-match mode


def score_candidates(
    target_logits: Tensor,  # [k+1, vocab]
    candidate_tokens: Tensor,  # [k] int64
    draft_probs: Tensor | None,  # [k, vocab] dense, in target ids; None selects exact-match mode
    config: SamplingConfig,
    generator: torch.Generator,
) -> ScoreResult:
    """Scores k candidate tokens with the target's k+1 logit rows (one Score call).

    Draws: one ``sample`` call for target samples 0..k, then, only when ``draft_probs`` is given, one
    ``sample`` call for recovered tokens 0..k-1. Works for k = 0 (only the bonus token).
    """
    assert target_logits.dim() == 2, f"target_logits must be [k+1, vocab], got {tuple(target_logits.shape)}"
    result = score_candidates_batch(
        target_logits.unsqueeze(0),
        candidate_tokens.unsqueeze(0),
        None if draft_probs is None else draft_probs.unsqueeze(0),
        config,
        generator,
    )
    recovered = result.recovered_tokens
    return ScoreResult(
        candidate_target_probs=result.candidate_target_probs[0],
        target_samples=result.target_samples[0],
        recovered_tokens=None if recovered is None else recovered[0],
    )


def score_candidates_batch(
    target_logits: Tensor,  # [b, k+1, vocab]
    candidate_tokens: Tensor,  # [b, k] int64
    draft_probs: Tensor | None,  # [b, k, vocab] dense, in target ids; None selects exact-match mode
    config: SamplingConfig,
    generator: torch.Generator,
) -> ScoreResult:  # fields [b, k], [b, k+1], [b, k]
    """``score_candidates`` for b sequences at once; with b = 1 it draws and returns the same values.

    Draws: one ``sample`` call over the b * (k+1) target rows (sequence-major), then one over the
    b * k residual rows when ``draft_probs`` is given.
    """
    assert target_logits.dim() == 3, (
        f"target_logits must be [b, k+1, vocab], got {tuple(target_logits.shape)}"
    )
    b, rows, vocab = target_logits.shape
    k = rows - 1
    assert candidate_tokens.shape == (b, k), (
        f"candidate_tokens must be [b, k] = {(b, k)}, got {tuple(candidate_tokens.shape)}"
    )
    assert draft_probs is None or draft_probs.shape == (b, k, vocab), (
        f"draft_probs must be [b, k, vocab] = {(b, k, vocab)}, got {tuple(draft_probs.shape)}"
    )
    target_probs = warp_probs(target_logits.reshape(b * rows, vocab), config).reshape(b, rows, vocab)
    candidates = candidate_tokens.to(torch.int64)
    candidate_target_probs = target_probs[:, :k].gather(-1, candidates.unsqueeze(-1)).squeeze(-1)
    target_samples = sample(target_probs.reshape(b * rows, vocab), generator).reshape(b, rows)
    recovered_tokens = None
    if draft_probs is not None:
        residual, _ = residual_probs(
            target_probs[:, :k].reshape(b * k, vocab), draft_probs.reshape(b * k, vocab)
        )
        recovered_tokens = sample(residual, generator).reshape(b, k)
    return ScoreResult(candidate_target_probs, target_samples, recovered_tokens)


def top2_logit_margins(logits: Tensor) -> Tensor:  # [n, vocab] -> [n] float32
    """The largest logit minus the second largest, per row (before any warper).

    A greedy target step picks the argmax; where this margin is tiny, the rounding of a multi-token and
    a one-token forward may pick different tokens (a near-tie). Rows of one column give +inf.
    """
    assert logits.dim() == 2, f"logits must be [n, vocab], got {tuple(logits.shape)}"
    if logits.shape[-1] < 2:
        return torch.full((logits.shape[0],), math.inf, dtype=torch.float32)
    top = torch.topk(logits.float(), 2, dim=-1).values
    return top[:, 0] - top[:, 1]


@dataclass(frozen=True)
class DraftedToken:
    """One draft token and the exact sparse proposal it was sampled from."""

    token: int
    support_ids: Tensor  # [m] int64: proposal support, probability descending, no zero entries
    support_probs: Tensor  # [m]: proposal probabilities (draft_probs), aligned with support_ids
    confidence: float  # the token's probability under the untruncated warped distribution


@dataclass(frozen=True)
class DraftBatch:
    """Draft tokens for b rows at once; supports keep zero-probability padding (``PADDING_PROB``)."""

    tokens: Tensor  # [b] int64
    support_ids: Tensor  # [b, m] int64
    support_probs: Tensor  # [b, m]
    confidence: Tensor  # [b]
    # [b, vocab]: the untruncated warped distribution (greedy: temperature-1 softmax) confidence is read
    # from; the stop classifier's features (``core.disco.features``) come from it too
    stop_probs: Tensor | None = None


def draft_tokens_batch(
    logits: Tensor,  # [b, vocab]
    config: SamplingConfig,
    max_support: int,
    generator: torch.Generator,
) -> DraftBatch:
    """Samples one draft token per row from warp -> truncate_support (the exact proposal).

    Draws one ``sample`` call over the b rows of the sparse proposal; greedy configs draw nothing and
    return the argmax with support ``{argmax: 1.0}`` (m = 1) and the temperature-1 softmax probability
    of the argmax as confidence.
    """
    assert logits.dim() == 2, f"logits must be [b, vocab], got {tuple(logits.shape)}"
    if max_support < 1:
        raise ValueError(f"max_support: must be >= 1, got {max_support}")
    if config.is_greedy:
        tokens = torch.argmax(logits, dim=-1)
        unit_probs = torch.softmax(logits.to(_compute_dtype(logits.dtype)), dim=-1)
        confidence = unit_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        ones = torch.ones((logits.shape[0], 1), dtype=unit_probs.dtype, device=logits.device)
        return DraftBatch(tokens, tokens.unsqueeze(-1), ones, confidence, unit_probs)
    warped = warp_probs(logits, config)
    support_ids, support_probs = truncate_support(warped, max_support)
    picks = sample(support_probs, generator)
    tokens = support_ids.gather(-1, picks.unsqueeze(-1)).squeeze(-1)
    confidence = warped.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return DraftBatch(tokens, support_ids, support_probs, confidence, warped)


def draft_token(
    logits: Tensor,  # [vocab]
    config: SamplingConfig,
    max_support: int,
    generator: torch.Generator,
) -> DraftedToken:
    """Samples one draft token and returns its exact sparse proposal (padding removed).

    Same draws as ``draft_tokens_batch`` with one row.
    """
    assert logits.dim() == 1, f"logits must be [vocab], got {tuple(logits.shape)}"
    batch = draft_tokens_batch(logits.unsqueeze(0), config, max_support, generator)
    keep = batch.support_probs[0] > 0
    return DraftedToken(
        token=int(batch.tokens[0].item()),
        support_ids=batch.support_ids[0][keep],
        support_probs=batch.support_probs[0][keep],
        confidence=float(batch.confidence[0].item()),
    )
