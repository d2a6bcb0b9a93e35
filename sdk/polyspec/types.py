"""Plain Python types of the SDK (no protobuf): request options, results and statistics."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, TypeAlias

AlgorithmName: TypeAlias = Literal["auto", "ar", "sd", "slem", "slrs", "tli"]
"""``auto`` lets the coordinator choose; the others force one verification algorithm."""

LookaheadPolicyName: TypeAlias = Literal["auto", "static", "confidence", "disco"]
"""``auto``: the coordinator drafts as far as it pays (from measured costs); ``static``: k tokens per
round; ``confidence``: up to k, stopping at an unsure draft token; ``disco``: up to k (by default the draft
length the classifier was trained on), stopping where the pair's trained classifier says so
(INVALID_ARGUMENT from a coordinator started without one)."""

SchedulerName: TypeAlias = Literal["si", "dsi", "auto"]
"""``si``: one round at a time; ``dsi``: verifications fanned out over the coordinator's target replicas
while the drafter drafts on (the same output law); ``auto``: the coordinator picks dsi where it pays."""

FinishReasonName: TypeAlias = Literal["length", "stop", "context", "unspecified"]
"""``length``: max_new_tokens reached; ``stop``: end of sequence; ``context``: context window full."""

ALGORITHMS: tuple[AlgorithmName, ...] = ("auto", "ar", "sd", "slem", "slrs", "tli")
LOOKAHEAD_POLICIES: tuple[LookaheadPolicyName, ...] = ("auto", "static", "confidence", "disco")
SCHEDULERS: tuple[SchedulerName, ...] = ("si", "dsi", "auto")


@dataclass(frozen=True)
class ChatMessage:
    """One turn of a conversation (``role`` is system, user, assistant, ...)."""

    role: str
    content: str


ChatInput: TypeAlias = ChatMessage | Mapping[str, str] | tuple[str, str]
"""A chat turn: a ``ChatMessage``, a ``{"role", "content"}`` mapping or a ``(role, content)`` pair."""


@dataclass(frozen=True)
class Lookahead:
    """How many tokens the drafter proposes per round.

    ``k`` is the number of draft tokens (static) or the most per round (dynamic policies); 0 lets the
    coordinator choose. ``confidence_threshold`` applies to the ``confidence`` policy (0 = default).
    """

    policy: LookaheadPolicyName = "auto"
    k: int = 0
    confidence_threshold: float = 0.0


@dataclass(frozen=True)
class GenerationStats:
    """Per-request statistics reported by the coordinator (every field of ``polyspec.v1.GenerationStats``)."""

    algorithm: str
    """The algorithm that ran: ``ar``, ``sd``, ``slem``, ``slrs`` or ``tli``."""
    lookahead: str
    """The lookahead policy that ran, e.g. ``static:5`` or ``confidence:5:0.40``."""
    prompt_tokens: int
    output_tokens: int
    draft_tokens: int
    accepted_tokens: int
    acceptance_rate: float
    """accepted_tokens / draft_tokens (0 when nothing was drafted)."""
    target_forwards: int
    drafter_forwards: int
    rounds: int
    time_to_first_token_seconds: float
    total_seconds: float
    tokens_per_second: float
    bytes_sent: int
    """Serialized message bytes from the coordinator to the model services."""
    bytes_received: int
    emulated_latency: bool
    """True when some service padded its forwards to an emulated latency (benchmarking)."""
    fallback_reason: str
    """Why the request fell back to another algorithm ("" if it did not)."""
    seed: int
    """The seed the request ran with. Passing it back reproduces a sampled output only under a
    deterministic lookahead (static, confidence) with the same models; see ``Client.generate``."""
    near_tie_positions: tuple[int, ...] = ()
    """Greedy requests: output positions decided by a target argmax over a top-2 logit margin under the
    coordinator's near-tie tolerance (only there may another forward shape pick another token)."""
    drafter_dtype: str = ""
    """The drafter's precision as its Info reports it (e.g. ``float32+int8-dynamic``); "" when no drafter
    ran. It changes speed and acceptance only: the output law is the target's."""
    target_dtype: str = ""
    """The target's precision as its Info reports it (e.g. ``float32``)."""
    scheduler: str = "si"
    """The scheduler that ran: ``si`` or ``dsi`` (never ``auto``)."""
    target_replicas_used: int = 0
    """Distinct target replicas that served a verification for the request."""
    verifications_preempted: int = 0
    """Verifications cancelled or discarded under DSI (their prefix was made stale by a rejection)."""
    target_tokens_per_output_token: float = 0.0
    """Tokens fed through target forwards per output token, discarded work included."""
    call_queue_seconds: float = 0.0
    """Total time the request's model-service calls waited for a free replica slot."""
    drafter_compute_seconds: float = 0.0
    """Sum of the compute time the drafter services reported for the request's Draft calls."""
    target_compute_seconds: float = 0.0
    """Sum of the compute time the target services reported for the request's Score calls (DSI: discarded
    verifications included)."""
    drafter_call_seconds: float = 0.0
    """The same Draft calls' wall time from send to reply; call - compute = wire, queueing and
    (de)serialisation. Under DSI calls overlap, so these sums can exceed ``total_seconds``."""
    target_call_seconds: float = 0.0
    """The same Score calls' wall time from send to reply (see ``drafter_call_seconds``)."""


@dataclass(frozen=True)
class GenerationResult:
    """The output of one generation: text, target token ids, why it stopped, and its statistics."""

    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReasonName
    stats: GenerationStats
    request_id: str = ""
