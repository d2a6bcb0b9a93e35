"""What the generation loop yields: committed output tokens, then one final event with the statistics."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from coordinator.validation import AlgorithmName


class FinishReason(enum.Enum):
    """Why a generation ended."""

    LENGTH = "length"  # max_new_tokens reached
    STOP = "stop"  # the target produced an end-of-sequence token
    CONTEXT = "context"  # the target's context window is full


@dataclass(frozen=True)
class RequestStats:
    """Per-request statistics (every field of ``polyspec.v1.GenerationStats``)."""

    algorithm: AlgorithmName
    lookahead: str
    prompt_tokens: int
    output_tokens: int
    draft_tokens: int
    accepted_tokens: int
    target_forwards: int
    drafter_forwards: int
    rounds: int
    time_to_first_token_seconds: float
    total_seconds: float
    bytes_sent: int
    bytes_received: int
    emulated_latency: bool
    fallback_reason: str
    seed: int

    @property
    def acceptance_rate(self) -> float:
        return self.accepted_tokens / self.draft_tokens if self.draft_tokens else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.output_tokens / self.total_seconds if self.total_seconds > 0 else 0.0


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
