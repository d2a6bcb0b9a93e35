"""Conversion between SDK types and ``polyspec.v1`` messages (the only module that builds requests)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias, cast

from polyspec.errors import InternalError, InvalidArgumentError
from polyspec.types import (
    ALGORITHMS,
    LOOKAHEAD_POLICIES,
    SCHEDULERS,
    AlgorithmName,
    ChatInput,
    ChatMessage,
    FinishReasonName,
    GenerationResult,
    GenerationStats,
    Lookahead,
    LookaheadPolicyName,
    SchedulerName,
)
from polyspec.v1 import common_pb2, coordinator_pb2

_ALGORITHM_TO_PROTO: dict[str, common_pb2.Algorithm.ValueType] = {
    "auto": common_pb2.ALGORITHM_AUTO,
    "ar": common_pb2.ALGORITHM_AR,
    "sd": common_pb2.ALGORITHM_SD,
    "slem": common_pb2.ALGORITHM_SLEM,
    "slrs": common_pb2.ALGORITHM_SLRS,
    "tli": common_pb2.ALGORITHM_TLI,
}
_POLICY_TO_PROTO: dict[str, coordinator_pb2.LookaheadPolicy.ValueType] = {
    "auto": coordinator_pb2.LOOKAHEAD_POLICY_AUTO,
    "static": coordinator_pb2.LOOKAHEAD_POLICY_STATIC,
    "confidence": coordinator_pb2.LOOKAHEAD_POLICY_CONFIDENCE,
    "disco": coordinator_pb2.LOOKAHEAD_POLICY_DISCO,
}
_SCHEDULER_TO_PROTO: dict[str, coordinator_pb2.Scheduler.ValueType] = {
    "si": coordinator_pb2.SCHEDULER_SI,
    "dsi": coordinator_pb2.SCHEDULER_DSI,
    "auto": coordinator_pb2.SCHEDULER_AUTO,
}
_FINISH_FROM_PROTO: dict[int, FinishReasonName] = {
    coordinator_pb2.FINISH_REASON_UNSPECIFIED: "unspecified",
    coordinator_pb2.FINISH_REASON_LENGTH: "length",
    coordinator_pb2.FINISH_REASON_STOP: "stop",
    coordinator_pb2.FINISH_REASON_CONTEXT: "context",
}
_UINT64_LIMIT = 1 << 64
_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1

LookaheadSpec: TypeAlias = str | int | Lookahead | None
"""An int k (static), a policy name, ``POLICY:K[:THRESHOLD]``, a ``Lookahead``, or None (auto)."""


def check_int(field: str, value: object, low: int = _INT32_MIN, high: int = _INT32_MAX) -> int:
    """``value`` as a wire integer: an int (not a bool) in ``[low, high]``, else ``InvalidArgumentError``.

    The default range is the wire's int32; the coordinator checks what a value means.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgumentError(f"{field}: must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise InvalidArgumentError(f"{field}: must lie in [{low}, {high}], got {value}")
    return value


def check_number(field: str, value: object) -> float:
    """``value`` as a wire float: an int or a float (not a bool), else ``InvalidArgumentError``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgumentError(f"{field}: must be a number, got {type(value).__name__}")
    return float(value)


def algorithm_name(value: int) -> str:
    """``ALGORITHM_SD`` -> ``"sd"``; an enum value this SDK does not know -> ``"unknown(N)"``."""
    try:
        name = common_pb2.Algorithm.Name(cast(common_pb2.Algorithm.ValueType, value))
    except ValueError:
        return f"unknown({value})"
    return name.removeprefix("ALGORITHM_").lower()


def algorithm_to_proto(name: str) -> common_pb2.Algorithm.ValueType:
    """``"sd"`` -> ``ALGORITHM_SD``; raises ``InvalidArgumentError`` for an unknown name."""
    try:
        return _ALGORITHM_TO_PROTO[name]
    except KeyError:
        raise InvalidArgumentError(
            f"algorithm: must be one of {', '.join(ALGORITHMS)}, got {name!r}"
        ) from None


def scheduler_to_proto(name: object) -> coordinator_pb2.Scheduler.ValueType:
    """``"dsi"`` -> ``SCHEDULER_DSI``; None -> unspecified (the coordinator's default)."""
    if name is None:
        return coordinator_pb2.SCHEDULER_UNSPECIFIED
    if not isinstance(name, str) or name not in _SCHEDULER_TO_PROTO:
        raise InvalidArgumentError(f"scheduler: must be one of {', '.join(SCHEDULERS)} or None, got {name!r}")
    return _SCHEDULER_TO_PROTO[name]


def scheduler_name(value: int) -> str:
    """``SCHEDULER_DSI`` -> ``"dsi"``; unspecified (an older coordinator: it ran SI) -> ``"si"``; an enum
    value this SDK does not know -> ``"unknown(N)"``."""
    if value == coordinator_pb2.SCHEDULER_UNSPECIFIED:
        return "si"
    try:
        name = coordinator_pb2.Scheduler.Name(cast(coordinator_pb2.Scheduler.ValueType, value))
    except ValueError:
        return f"unknown({value})"
    return name.removeprefix("SCHEDULER_").lower()


def _parse_k(text: str) -> int:
    try:
        k = int(text)
    except ValueError:
        raise InvalidArgumentError(f"lookahead: k must be an integer, got {text!r}") from None
    if k < 0:
        raise InvalidArgumentError(f"lookahead: k must be >= 0, got {k}")
    return k


def _parse_threshold(text: str) -> float:
    try:
        threshold = float(text)
    except ValueError:
        raise InvalidArgumentError(f"lookahead: threshold must be a number, got {text!r}") from None
    return threshold


def _parse_lookahead_text(spec: str) -> tuple[LookaheadPolicyName, int | None, float | None]:
    parts = spec.strip().lower().split(":")
    if len(parts) == 1 and parts[0].isdigit():
        return "static", _parse_k(parts[0]), None
    policy = parts[0]
    if policy not in LOOKAHEAD_POLICIES or len(parts) > 3:
        raise InvalidArgumentError(
            "lookahead: expected K, POLICY, POLICY:K or confidence:K:THRESHOLD with POLICY one of "
            f"{', '.join(LOOKAHEAD_POLICIES)}, got {spec!r}"
        )
    k = _parse_k(parts[1]) if len(parts) > 1 and parts[1] else None
    threshold = _parse_threshold(parts[2]) if len(parts) > 2 else None
    return policy, k, threshold


def _merge(name: str, from_spec: float | None, from_kwarg: float | None) -> float | None:
    if from_spec is not None and from_kwarg is not None and from_spec != from_kwarg:
        raise InvalidArgumentError(f"lookahead: {name} given twice ({from_spec} and {from_kwarg})")
    return from_spec if from_spec is not None else from_kwarg


def parse_lookahead(
    spec: LookaheadSpec,
    *,
    k: int | None = None,
    confidence_threshold: float | None = None,
) -> Lookahead:
    """A ``Lookahead`` from an int k (static), a policy name, or ``POLICY:K[:THRESHOLD]``.

    ``"5"`` and ``5`` mean ``static:5``; ``k`` and ``confidence_threshold`` complete a bare policy name.
    """
    if k is not None:
        check_int("lookahead_k", k)
    if confidence_threshold is not None:
        check_number("confidence_threshold", confidence_threshold)
    if isinstance(spec, Lookahead):
        policy, spec_k, spec_threshold = spec.policy, spec.k, spec.confidence_threshold
    elif isinstance(spec, bool):
        raise InvalidArgumentError(f"lookahead: expected an int or a policy string, got {spec!r}")
    elif isinstance(spec, int):
        if spec < 1:
            raise InvalidArgumentError(f"lookahead: k must be >= 1, got {spec}")
        policy, spec_k, spec_threshold = "static", spec, None
    elif spec is None:
        policy, spec_k, spec_threshold = "auto", None, None
    else:
        policy, spec_k, spec_threshold = _parse_lookahead_text(spec)
    final_k = check_int("lookahead.k", _merge("k", spec_k, k) or 0)
    threshold = check_number(
        "lookahead.confidence_threshold", _merge("threshold", spec_threshold, confidence_threshold) or 0.0
    )
    if final_k < 0:
        raise InvalidArgumentError(f"lookahead: k must be >= 0, got {final_k}")
    if threshold and policy != "confidence":
        raise InvalidArgumentError(f"lookahead: a threshold applies to the confidence policy, not {policy}")
    if not 0.0 <= threshold < 1.0:
        raise InvalidArgumentError(f"lookahead: threshold must lie in [0, 1), got {threshold}")
    return Lookahead(policy=policy, k=final_k, confidence_threshold=threshold)


def lookahead_to_proto(lookahead: Lookahead) -> coordinator_pb2.Lookahead:
    return coordinator_pb2.Lookahead(
        policy=_POLICY_TO_PROTO[lookahead.policy],
        k=lookahead.k,
        confidence_threshold=lookahead.confidence_threshold,
    )


def chat_message(item: ChatInput, index: int) -> ChatMessage:
    """Normalises one chat turn given as a ``ChatMessage``, a mapping or a ``(role, content)`` pair."""
    role: object
    content: object
    if isinstance(item, ChatMessage):
        role, content = item.role, item.content
    elif isinstance(item, Mapping):
        role, content = item.get("role"), item.get("content")
    elif isinstance(item, tuple) and len(item) == 2:
        role, content = item
    else:
        raise InvalidArgumentError(f"chat[{index}]: expected a (role, content) pair or a mapping")
    if not isinstance(role, str) or not isinstance(content, str):
        raise InvalidArgumentError(f"chat[{index}]: role and content must be strings")
    return ChatMessage(role=role, content=content)


def _set_input(
    request: coordinator_pb2.GenerateRequest,
    prompt: str | None,
    chat: Sequence[ChatInput] | None,
    fim: tuple[str, str] | None,
) -> None:
    given = [name for name, value in (("prompt", prompt), ("chat", chat), ("fim", fim)) if value is not None]
    if len(given) != 1:
        raise InvalidArgumentError(f"prompt: give exactly one of prompt, chat, fim (got {given or 'none'})")
    if prompt is not None:
        if not isinstance(prompt, str):
            raise InvalidArgumentError(f"prompt: must be a string, got {type(prompt).__name__}")
        request.prompt = prompt
    elif chat is not None:
        if isinstance(chat, str | bytes):
            raise InvalidArgumentError("chat: must be a sequence of messages, not a string")
        messages = [chat_message(item, i) for i, item in enumerate(chat)]
        request.chat.CopyFrom(
            coordinator_pb2.Chat(
                messages=[coordinator_pb2.ChatMessage(role=m.role, content=m.content) for m in messages]
            )
        )
    elif fim is not None:
        if not (len(fim) == 2 and all(isinstance(part, str) for part in fim)):
            raise InvalidArgumentError("fim: must be a (prefix, suffix) pair of strings")
        request.fim.CopyFrom(coordinator_pb2.FillInTheMiddle(prefix=fim[0], suffix=fim[1]))


def _sampling(temperature: float | None, top_k: int | None, top_p: float | None) -> common_pb2.SamplingParams:
    sampling = common_pb2.SamplingParams(top_k=0 if top_k is None else check_int("top_k", top_k))
    if temperature is not None:
        sampling.temperature = check_number("temperature", temperature)
    if top_p is not None:
        sampling.top_p = check_number("top_p", top_p)
    return sampling


def build_request(
    *,
    prompt: str | None = None,
    chat: Sequence[ChatInput] | None = None,
    fim: tuple[str, str] | None = None,
    max_new_tokens: int,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    algorithm: AlgorithmName | str = "auto",
    lookahead: LookaheadSpec = None,
    lookahead_k: int | None = None,
    confidence_threshold: float | None = None,
    ignore_eos: bool = False,
    request_id: str | None = None,
    scheduler: SchedulerName | str | None = None,
) -> coordinator_pb2.GenerateRequest:
    """The ``GenerateRequest`` for these options (see ``Client.generate``).

    Checks locally only what the wire cannot carry (names, shapes, types, integers outside their wire
    type, e.g. int32 or the seed's uint64), raising ``InvalidArgumentError`` naming the argument; what
    a value means (``max_new_tokens`` at least 1, ``top_p`` in (0, 1], ...) is the coordinator's to check.
    """
    parsed_lookahead = parse_lookahead(lookahead, k=lookahead_k, confidence_threshold=confidence_threshold)
    if seed is not None:
        check_int("seed", seed, 0, _UINT64_LIMIT - 1)
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidArgumentError(f"request_id: must be a string, got {type(request_id).__name__}")
    request = coordinator_pb2.GenerateRequest(
        max_new_tokens=check_int("max_new_tokens", max_new_tokens),
        sampling=_sampling(temperature, top_k, top_p),
        algorithm=algorithm_to_proto(algorithm),
        lookahead=lookahead_to_proto(parsed_lookahead),
        ignore_eos=ignore_eos,
        request_id=request_id or "",
        scheduler=scheduler_to_proto(scheduler),
    )
    _set_input(request, prompt, chat, fim)
    if seed is not None:
        request.seed = seed
    return request


def finish_reason_name(value: int) -> FinishReasonName:
    return _FINISH_FROM_PROTO.get(value, "unspecified")


def stats_from_proto(stats: coordinator_pb2.GenerationStats) -> GenerationStats:
    return GenerationStats(
        algorithm=algorithm_name(stats.algorithm),
        lookahead=stats.lookahead,
        prompt_tokens=stats.prompt_tokens,
        output_tokens=stats.output_tokens,
        draft_tokens=stats.draft_tokens,
        accepted_tokens=stats.accepted_tokens,
        acceptance_rate=stats.acceptance_rate,
        target_forwards=stats.target_forwards,
        drafter_forwards=stats.drafter_forwards,
        rounds=stats.rounds,
        time_to_first_token_seconds=stats.time_to_first_token_seconds,
        total_seconds=stats.total_seconds,
        tokens_per_second=stats.tokens_per_second,
        bytes_sent=stats.bytes_sent,
        bytes_received=stats.bytes_received,
        emulated_latency=stats.emulated_latency,
        fallback_reason=stats.fallback_reason,
        seed=stats.seed,
        near_tie_positions=tuple(stats.near_tie_positions),
        drafter_dtype=stats.drafter_dtype,
        target_dtype=stats.target_dtype,
        scheduler=scheduler_name(stats.scheduler),
        target_replicas_used=stats.target_replicas_used,
        verifications_preempted=stats.verifications_preempted,
        target_tokens_per_output_token=stats.target_tokens_per_output_token,
        call_queue_seconds=stats.call_queue_seconds,
        drafter_compute_seconds=stats.drafter_compute_seconds,
        target_compute_seconds=stats.target_compute_seconds,
        drafter_call_seconds=stats.drafter_call_seconds,
        target_call_seconds=stats.target_call_seconds,
    )


def result_from_proto(response: coordinator_pb2.GenerateResponse) -> GenerationResult:
    return GenerationResult(
        text=response.text,
        token_ids=tuple(response.token_ids),
        finish_reason=finish_reason_name(response.finish_reason),
        stats=stats_from_proto(response.stats),
        request_id=response.request_id,
    )


class StreamAssembler:
    """Accumulates ``GenerateStreamResponse`` messages into the deltas and the final result."""

    def __init__(self) -> None:
        self.received = 0
        self._text: list[str] = []
        self._token_ids: list[int] = []
        self._request_id = ""
        self._final: coordinator_pb2.GenerateStreamResponse | None = None

    @property
    def finished(self) -> bool:
        return self._final is not None

    def add(self, message: coordinator_pb2.GenerateStreamResponse) -> str:
        """Takes one message; returns its text delta."""
        if self._final is not None:
            raise InternalError("GenerateStream: a message arrived after the final one")
        self.received += 1
        self._text.append(message.text_delta)
        self._token_ids.extend(message.token_ids)
        self._request_id = message.request_id or self._request_id
        if message.finish_reason != coordinator_pb2.FINISH_REASON_UNSPECIFIED:
            self._final = message
        return message.text_delta

    def result(self) -> GenerationResult:
        """The assembled result; raises ``InternalError`` if the final message never came."""
        if self._final is None:
            raise InternalError("GenerateStream: the stream ended without its final message")
        return GenerationResult(
            text="".join(self._text),
            token_ids=tuple(self._token_ids),
            finish_reason=finish_reason_name(self._final.finish_reason),
            stats=stats_from_proto(self._final.stats),
            request_id=self._request_id,
        )
