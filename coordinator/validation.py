"""GenerateRequest -> validated, frozen domain parameters (the only place that reads the request proto).

Every bad field raises ``InvalidArgumentError`` naming the field. Checks that need the models (prompt
length against the context window, FIM tokens, chat templates) happen when the prompt is tokenized
(``coordinator.prompting``).
"""

from __future__ import annotations

import enum
import math
import uuid
from dataclasses import dataclass

from polyspec.v1 import common_pb2, coordinator_pb2

from coordinator.config import CoordinatorSettings
from core.errors import InvalidArgumentError
from core.sampling import SamplingConfig

MAX_REQUEST_ID_CHARS = 128


class AlgorithmName(enum.Enum):
    """Verification algorithm asked for (``AUTO``) or run (the others)."""

    AUTO = "auto"
    AR = "ar"
    SD = "sd"
    SLEM = "slem"
    SLRS = "slrs"
    TLI = "tli"

    def to_proto(self) -> common_pb2.Algorithm.ValueType:
        return _ALGORITHM_TO_PROTO[self]


_ALGORITHM_FROM_PROTO: dict[int, AlgorithmName] = {
    common_pb2.ALGORITHM_UNSPECIFIED: AlgorithmName.AUTO,
    common_pb2.ALGORITHM_AUTO: AlgorithmName.AUTO,
    common_pb2.ALGORITHM_AR: AlgorithmName.AR,
    common_pb2.ALGORITHM_SD: AlgorithmName.SD,
    common_pb2.ALGORITHM_SLEM: AlgorithmName.SLEM,
    common_pb2.ALGORITHM_SLRS: AlgorithmName.SLRS,
    common_pb2.ALGORITHM_TLI: AlgorithmName.TLI,
}
_ALGORITHM_TO_PROTO: dict[AlgorithmName, common_pb2.Algorithm.ValueType] = {
    AlgorithmName.AUTO: common_pb2.ALGORITHM_AUTO,
    AlgorithmName.AR: common_pb2.ALGORITHM_AR,
    AlgorithmName.SD: common_pb2.ALGORITHM_SD,
    AlgorithmName.SLEM: common_pb2.ALGORITHM_SLEM,
    AlgorithmName.SLRS: common_pb2.ALGORITHM_SLRS,
    AlgorithmName.TLI: common_pb2.ALGORITHM_TLI,
}


class LookaheadKind(enum.Enum):
    """Lookahead policy asked for."""

    AUTO = "auto"
    STATIC = "static"
    CONFIDENCE = "confidence"
    DISCO = "disco"


_LOOKAHEAD_FROM_PROTO: dict[int, LookaheadKind] = {
    coordinator_pb2.LOOKAHEAD_POLICY_UNSPECIFIED: LookaheadKind.AUTO,
    coordinator_pb2.LOOKAHEAD_POLICY_AUTO: LookaheadKind.AUTO,
    coordinator_pb2.LOOKAHEAD_POLICY_STATIC: LookaheadKind.STATIC,
    coordinator_pb2.LOOKAHEAD_POLICY_CONFIDENCE: LookaheadKind.CONFIDENCE,
    coordinator_pb2.LOOKAHEAD_POLICY_DISCO: LookaheadKind.DISCO,
}


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


def params_from_proto(
    request: coordinator_pb2.GenerateRequest, settings: CoordinatorSettings
) -> GenerationParams:
    """Validates a GenerateRequest against the coordinator's limits."""
    return GenerationParams(
        input=_input(request),
        max_new_tokens=_max_new_tokens(request.max_new_tokens, settings.max_new_tokens_cap),
        sampling=_sampling(request.sampling),
        seed=request.seed if request.HasField("seed") else None,
        algorithm=_algorithm(request.algorithm),
        lookahead=_lookahead(request.lookahead, settings.max_lookahead_k),
        ignore_eos=request.ignore_eos,
        request_id=_request_id(request.request_id),
    )


def _input(request: coordinator_pb2.GenerateRequest) -> PromptInput:
    which = request.WhichOneof("input")
    if which == "prompt":
        if not request.prompt:
            raise InvalidArgumentError("prompt", "must not be empty")
        return TextInput(request.prompt)
    if which == "chat":
        return _chat(request.chat)
    if which == "fim":
        return FimInput(prefix=request.fim.prefix, suffix=request.fim.suffix)
    raise InvalidArgumentError("input", "set one of prompt, chat or fim")


def _chat(chat: coordinator_pb2.Chat) -> ChatInput:
    if not chat.messages:
        raise InvalidArgumentError("chat.messages", "must not be empty")
    for index, message in enumerate(chat.messages):
        if not message.role:
            raise InvalidArgumentError(f"chat.messages[{index}].role", "must not be empty")
    return ChatInput(tuple(ChatTurn(m.role, m.content) for m in chat.messages))


def _max_new_tokens(value: int, cap: int) -> int:
    if value < 1:
        raise InvalidArgumentError("max_new_tokens", f"must be >= 1, got {value}")
    if value > cap:
        raise InvalidArgumentError("max_new_tokens", f"must be <= {cap} (the coordinator's cap), got {value}")
    return value


def _sampling(sampling: common_pb2.SamplingParams) -> SamplingConfig:
    temperature = sampling.temperature if sampling.HasField("temperature") else 1.0
    top_p = sampling.top_p if sampling.HasField("top_p") else 1.0
    return SamplingConfig(temperature=temperature, top_k=sampling.top_k, top_p=top_p)  # validates


def _algorithm(value: int) -> AlgorithmName:
    try:
        return _ALGORITHM_FROM_PROTO[value]
    except KeyError:
        raise InvalidArgumentError("algorithm", f"unknown value {value}") from None


def _lookahead(lookahead: coordinator_pb2.Lookahead, max_k: int) -> LookaheadRequest:
    try:
        kind = _LOOKAHEAD_FROM_PROTO[lookahead.policy]
    except KeyError:
        raise InvalidArgumentError("lookahead.policy", f"unknown value {lookahead.policy}") from None
    if lookahead.k != 0 and not 1 <= lookahead.k <= max_k:
        raise InvalidArgumentError(
            "lookahead.k", f"must lie in [1, {max_k}] (0 = default), got {lookahead.k}"
        )
    threshold = lookahead.confidence_threshold
    if math.isnan(threshold) or not 0 <= threshold < 1:
        raise InvalidArgumentError(
            "lookahead.confidence_threshold", f"must lie in [0, 1) (0 = default), got {threshold}"
        )
    return LookaheadRequest(
        kind=kind,
        k=lookahead.k or None,
        confidence_threshold=threshold or None,
    )


def _request_id(value: str) -> str:
    if not value:
        return uuid.uuid4().hex
    if len(value) > MAX_REQUEST_ID_CHARS or not value.isprintable():
        raise InvalidArgumentError(
            "request_id", f"must be at most {MAX_REQUEST_ID_CHARS} printable characters"
        )
    return value
