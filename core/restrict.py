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
proposed there: the round stops drafting and the target samples that position itself. The drafter's
loop applies the restriction (``core.drafting``, with the mask the coordinator registers).

``drafter_to_target`` (``# [drafter_vocab] int64``) maps a drafter id to the target id of the same token
string, ``NOT_IN_INTERSECTION`` (-1) for drafter tokens outside the intersection; it must be injective on
the mapped ids. Building it (canonical token bytes) lives in ``coordinator.vocab``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

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
