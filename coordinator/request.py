"""A generation request as the coordinator works with it, and what it reports: frozen domain types.

``coordinator.wire`` builds ``GenerationParams`` from a ``GenerateRequest``, naming every bad field, and
writes ``FinishReason`` and ``RequestStats`` into the response (no protobuf here); checks that need the
models (prompt length against the context window, FIM tokens, chat templates) happen when the prompt is
tokenized (``coordinator.prompting``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from coordinator.scheduler_name import SchedulerName
from core.sampling import SamplingConfig

__all__ = ["SchedulerName"]  # re-exported: the request's scheduler (its own module keeps the CLI light)


class AlgorithmName(enum.Enum):
    """Verification algorithm asked for (``AUTO``) or run (the others)."""

    AUTO = "auto"
    AR = "ar"
    SD = "sd"
    SLEM = "slem"
    SLRS = "slrs"
    TLI = "tli"


class LookaheadKind(enum.Enum):
    """Lookahead policy asked for."""

    AUTO = "auto"
    STATIC = "static"
    CONFIDENCE = "confidence"
    DISCO = "disco"


@dataclass(frozen=True)
class TextInput:
    """A raw prompt, tokenized the way each model's tokenizer does by default."""

    text: str


@dataclass(frozen=True)
class ChatTurn:
    role: str
    content: str


@dataclass(frozen=True)
class ChatInput:
    """A conversation, formatted with each model's own chat template."""

    messages: tuple[ChatTurn, ...]


@dataclass(frozen=True)
class FimInput:
    """Fill-in-the-middle: generate what goes between ``prefix`` and ``suffix``."""

    prefix: str
    suffix: str


PromptInput = TextInput | ChatInput | FimInput


def prompt_bytes(prompt: PromptInput) -> int:
    """The UTF-8 size of a prompt's text: the prompt, the chat roles and contents, or FIM prefix + suffix."""
    if isinstance(prompt, TextInput):
        return _utf8_size(prompt.text)
    if isinstance(prompt, ChatInput):
        return sum(_utf8_size(turn.role) + _utf8_size(turn.content) for turn in prompt.messages)
    return _utf8_size(prompt.prefix) + _utf8_size(prompt.suffix)


# Characters encoded at a time to size a non-ASCII text: the check never holds a copy of a huge prompt.
_SIZE_CHUNK_CHARS = 1 << 20


def _utf8_size(text: str) -> int:
    """The UTF-8 size of ``text`` without encoding it whole (an ASCII text's size is its length)."""
    if text.isascii():
        return len(text)
    return sum(
        len(text[start : start + _SIZE_CHUNK_CHARS].encode("utf-8", errors="surrogatepass"))
        for start in range(0, len(text), _SIZE_CHUNK_CHARS)
    )


@dataclass(frozen=True)
class LookaheadRequest:
    """The lookahead asked for; ``None`` fields take the coordinator's defaults."""

    kind: LookaheadKind
    k: int | None
    confidence_threshold: float | None


@dataclass(frozen=True)
class GenerationParams:
    """A validated GenerateRequest."""

    input: PromptInput
    max_new_tokens: int
    sampling: SamplingConfig
    seed: int | None
    algorithm: AlgorithmName
    lookahead: LookaheadRequest
    ignore_eos: bool
    request_id: str
    scheduler: SchedulerName | None = None  # None: the coordinator's default scheduler


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
    near_tie_positions: tuple[int, ...] = ()  # greedy: output positions decided at a near-tie
    drafter_dtype: str = ""  # the drafter's precision (its Info's dtype); "" when no drafter ran
    target_dtype: str = ""  # the target's precision (its Info's dtype)
    scheduler: SchedulerName = SchedulerName.SI  # the scheduler that ran (never AUTO)
    target_replicas_used: int = 0  # distinct target replicas that served a Score for the request
    verifications_preempted: int = 0  # Score calls cancelled or discarded (a stale prefix) under DSI
    target_tokens_computed: int = 0  # tokens fed through target forwards, discarded work included
    call_queue_seconds: float = 0.0  # total time the request's calls waited for a free replica slot
    # Sums over the request's calls (DSI's overlap: they can exceed total_seconds): the services' reported
    # compute_seconds, and the wall time from send to reply as the coordinator saw it.
    drafter_compute_seconds: float = 0.0
    target_compute_seconds: float = 0.0
    drafter_call_seconds: float = 0.0
    target_call_seconds: float = 0.0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted_tokens / self.draft_tokens if self.draft_tokens else 0.0

    @property
    def target_tokens_per_output_token(self) -> float:
        return self.target_tokens_computed / self.output_tokens if self.output_tokens else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.output_tokens / self.total_seconds if self.total_seconds > 0 else 0.0
