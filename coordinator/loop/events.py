"""What the generation loop yields: committed output tokens, then one final event with the statistics."""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.request import FinishReason, RequestStats


@dataclass(frozen=True)
class TokensEvent:
    """Output tokens committed by one round (target ids, in order, never retracted)."""

    token_ids: tuple[int, ...]


@dataclass(frozen=True)
class FinishEvent:
    """The last event of a generation."""

    reason: FinishReason
    stats: RequestStats


GenerationEvent = TokensEvent | FinishEvent

__all__ = ["FinishEvent", "FinishReason", "GenerationEvent", "RequestStats", "TokensEvent"]
