"""TLI, token-level intersection: speculative sampling with a drafter of another vocabulary.

Timor et al., "Accelerating LLM Inference with Lossless Speculative Decoding Algorithms for
Heterogeneous Vocabularies", ICML 2025 (arXiv 2502.05202), Algorithm 4. The drafter is restricted to the
tokens whose strings exist in both vocabularies (the intersection); its logits elsewhere are masked to
-inf *before* its warpers, so its proposal is renormalised on the intersection (by Z, the drafter's mass
there). The proposal is mapped into target ids and verified by the unchanged speculative-sampling rule of
``coordinator.verify.speculative`` (arXiv 2211.17192): lossless because the mapped proposal is exactly the
distribution the draft token was sampled from. Acceptance per position is
``sum over the intersection of min(target_probs, draft_probs / Z)``.

When the intersection holds no drafter mass at a position (no finite masked logit), no draft token is
proposed there: the round stops drafting and the target samples that position itself.

``drafter_to_target`` (``# [drafter_vocab] int64``) maps a drafter id to the target id of the same token
string, ``NOT_IN_INTERSECTION`` (-1) for drafter tokens outside the intersection; it must be injective on
the mapped ids. Building it (canonical token bytes) lives in ``coordinator.vocab``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from core.sampling import DraftedToken, SamplingConfig, draft_token

# Entry of ``drafter_to_target`` for a drafter token with no target token of the same string.
NOT_IN_INTERSECTION = -1


def validate_drafter_to_target(
    drafter_to_target: Tensor,  # [drafter_vocab] int64
    target_vocab_size: int,
) -> None:
    """Raises ``ValueError`` unless the map is 1-D, in [-1, target_vocab_size) and injective on mapped ids."""
    if drafter_to_target.dim() != 1:
        raise ValueError(f"drafter_to_target: must be 1-D, got shape {tuple(drafter_to_target.shape)}")
    if drafter_to_target.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"drafter_to_target: must hold integers, got {drafter_to_target.dtype}")
    mapped = drafter_to_target[drafter_to_target != NOT_IN_INTERSECTION]
    if bool(((mapped < 0) | (mapped >= target_vocab_size)).any()):
        raise ValueError(f"drafter_to_target: ids must be -1 or in [0, {target_vocab_size})")
    sorted_ids = torch.sort(mapped).values
    if bool((sorted_ids[1:] == sorted_ids[:-1]).any()):
        raise ValueError("drafter_to_target: must be injective (two drafter tokens map to one target id)")


def intersection_mask(
    drafter_to_target: Tensor,  # [drafter_vocab] int64
    vocab: int,
) -> Tensor:  # [vocab] bool
    """Which of the drafter's ``vocab`` logit columns are in the intersection.

    ``vocab`` is the width of the drafter's logits; columns beyond ``len(drafter_to_target)`` (padding
    rows of an embedding matrix larger than the tokenizer) are outside the intersection.
    """
    assert drafter_to_target.dim() == 1, (
        f"drafter_to_target must be [drafter_vocab], got {drafter_to_target.shape}"
    )
    mask = torch.zeros(vocab, dtype=torch.bool, device=drafter_to_target.device)
    width = min(vocab, drafter_to_target.shape[0])
    mask[:width] = drafter_to_target[:width] != NOT_IN_INTERSECTION
    return mask


def target_intersection_mask(
    drafter_to_target: Tensor,  # [drafter_vocab] int64
    target_vocab: int,
) -> Tensor:  # [target_vocab] bool
    """Which target ids are in the intersection (the image of ``drafter_to_target``)."""
    assert drafter_to_target.dim() == 1, (
        f"drafter_to_target must be [drafter_vocab], got {drafter_to_target.shape}"
    )
    mask = torch.zeros(target_vocab, dtype=torch.bool, device=drafter_to_target.device)
    mapped = drafter_to_target[drafter_to_target != NOT_IN_INTERSECTION].to(torch.int64)
    mask[mapped] = True
    return mask


def restrict_logits(
    logits: Tensor,  # [..., vocab]
    mask: Tensor,  # [vocab] bool
) -> Tensor:  # [..., vocab]
    """Sets logits outside ``mask`` to -inf."""
    assert mask.dim() == 1 and logits.shape[-1] == mask.shape[0], (
        f"mask must be [vocab] = [{logits.shape[-1]}], got {tuple(mask.shape)}"
    )
    return logits.masked_fill(~mask, -math.inf)


def has_intersection_mass(
    restricted_logits: Tensor,  # [..., vocab] after restrict_logits
) -> Tensor:  # [...] bool
    """Whether each row has a finite logit, i.e. Z > 0 and a draft token can be proposed."""
    return torch.isfinite(restricted_logits).any(dim=-1)


def intersection_mass(
    probs: Tensor,  # [n, vocab] drafter distribution (unrestricted)
    mask: Tensor,  # [vocab] bool
) -> Tensor:  # [n]
    """Z: the mass a distribution puts on the intersection."""
    assert probs.dim() == 2 and probs.shape[-1] == mask.shape[0], (
        f"probs must be [n, vocab] with vocab = {mask.shape[0]}, got {tuple(probs.shape)}"
    )
    return (probs * mask).sum(dim=-1)


def map_sparse_to_target(
    support_ids: Tensor,  # [m] or [n, m] int64 drafter ids
    support_probs: Tensor,  # same shape as support_ids
    drafter_to_target: Tensor,  # [drafter_vocab] int64
) -> tuple[Tensor, Tensor]:  # (target ids, probs), same shape as the inputs
    """Maps a sparse drafter proposal into target ids.

    Zero-probability entries (padding) may be outside the intersection and map to
    ``NOT_IN_INTERSECTION``; a positive-probability entry outside it raises ``ValueError`` (the proposal
    was not restricted). Probabilities are returned unchanged.
    """
    assert support_ids.shape == support_probs.shape, (
        f"support_ids and support_probs must share a shape, got {tuple(support_ids.shape)} "
        f"and {tuple(support_probs.shape)}"
    )
    in_range = (support_ids >= 0) & (support_ids < drafter_to_target.shape[0])
    target_ids = torch.where(
        in_range,
        drafter_to_target[support_ids.clamp(0, drafter_to_target.shape[0] - 1)],
        NOT_IN_INTERSECTION,
    ).to(torch.int64)
    if bool(((target_ids == NOT_IN_INTERSECTION) & (support_probs > 0)).any()):
        raise ValueError("support_ids: a token with positive probability is outside the intersection")
    return target_ids, support_probs


@dataclass(frozen=True)
class TliDraftedToken:
    """A draft token restricted to the intersection: its drafter id and its proposal in target ids."""

    drafter_token: int  # the drafter's own id, to extend the drafter's context
    drafted: DraftedToken  # token, support_ids (target ids), support_probs, confidence


def draft_token_tli(
    logits: Tensor,  # [vocab] drafter logits
    drafter_to_target: Tensor,  # [drafter_vocab] int64
    config: SamplingConfig,
    max_support: int,
    generator: torch.Generator,
) -> TliDraftedToken | None:
    """Drafts one token restricted to the intersection; the proposal comes back in target ids.

    Returns None (no draft token; the position falls back to target sampling) when the intersection has
    no drafter mass. Draws as ``draft_token`` when a token is drafted, nothing otherwise. The confidence is
    the token's probability under the restricted (renormalised) warped distribution.
    """
    assert logits.dim() == 1, f"logits must be [vocab], got {tuple(logits.shape)}"
    restricted = restrict_logits(logits, intersection_mask(drafter_to_target, logits.shape[0]))
    if not bool(has_intersection_mass(restricted).item()):
        return None
    drafted = draft_token(restricted, config, max_support, generator)
    support_ids, support_probs = map_sparse_to_target(
        drafted.support_ids, drafted.support_probs, drafter_to_target
    )
    in_target = DraftedToken(
        token=int(drafter_to_target[drafted.token].item()),
        support_ids=support_ids,
        support_probs=support_probs,
        confidence=drafted.confidence,
    )
    return TliDraftedToken(drafter_token=drafted.token, drafted=in_target)
