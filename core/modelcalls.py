"""The model-service calls as domain types (no protobuf): what the coordinator's client sends and gets back,
and what the model service's engine serves; each side converts them to and from ``polyspec.v1`` in its
own wire module (``coordinator.wire``, ``services.model.wire``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from core.sampling import SamplingConfig


@dataclass(frozen=True)
class ContextRef:
    """A sequence's context as a request names it: a prefix of the held tokens plus new tokens."""

    sequence_id: str
    cached_prefix_len: int
    cached_prefix_checksum: int
    tokens: tuple[int, ...]

    @classmethod
    def whole(cls, sequence_id: str, tokens: Sequence[int]) -> ContextRef:
        """A whole context, nothing left to the server's cache (a client may shorten it to a delta)."""
        return cls(sequence_id, 0, 0, tuple(tokens))


@dataclass(frozen=True)
class SparseProbs:
    """An exact sparse distribution: ``probs[i]`` is the probability of ``token_ids[i]``."""

    token_ids: tuple[int, ...]
    probs: tuple[float, ...]


@dataclass(frozen=True)
class DraftCall:
    """Sample up to ``max_draft_tokens`` draft tokens after a context."""

    context: ContextRef
    max_draft_tokens: int
    sampling: SamplingConfig
    seed: int
    stop_token_ids: frozenset[int] = frozenset()
    confidence_threshold: float = 0.0
    max_support: int = 0  # 0 = the server's default
    token_mask_id: str = ""  # a mask registered with SetTokenMask; "" = no restriction
    stop_classifier_id: str = ""  # a stop classifier registered with SetStopClassifier; "" = none
    stop_classifier_threshold: float = 0.0  # 0 = the classifier's own threshold
    return_features: bool = False  # return each draft token's stop features (core.disco.features)


@dataclass(frozen=True)
class ScoreCall:
    """Score candidate tokens after a context; ``draft_probs`` None selects exact-match mode."""

    context: ContextRef
    candidate_tokens: tuple[int, ...]
    draft_probs: tuple[SparseProbs, ...] | None
    sampling: SamplingConfig
    seed: int


@dataclass
class ForwardStats:
    """Work done for one call (see ``polyspec.v1.ForwardStats``)."""

    computed_tokens: int = 0
    reused_tokens: int = 0
    forwards: int = 0
    compute_seconds: float = 0.0
    emulated_latency: bool = False
    emulated_overruns: int = 0  # forwards whose real compute exceeded the emulated latency


@dataclass(frozen=True)
class DraftOutcome:
    """Draft tokens, the exact distribution each was sampled from, and the work done."""

    draft_tokens: tuple[int, ...]
    draft_probs: tuple[SparseProbs, ...]
    stats: ForwardStats
    features: tuple[tuple[float, ...], ...] = ()  # per draft token, when the call asked for them


@dataclass(frozen=True)
class ScoreOutcome:
    """What the coordinator needs to verify candidates (see ``polyspec.v1.ScoreResponse``)."""

    candidate_target_probs: tuple[float, ...]
    target_samples: tuple[int, ...]
    recovered_tokens: tuple[int, ...]
    stats: ForwardStats
    # Greedy calls: per position, the top logit minus the second (before warpers); () otherwise.
    top2_logit_margins: tuple[float, ...] = ()


@dataclass(frozen=True)
class FimTokens:
    """Fill-in-the-middle special tokens."""

    prefix: str
    suffix: str
    middle: str


@dataclass(frozen=True)
class EngineInfo:
    """Identity, limits and tokenizer of the loaded model (see ``polyspec.v1.InfoResponse``)."""

    model_name: str
    model_type: str
    vocab_size: int
    max_context_tokens: int
    eos_token_ids: tuple[int, ...]
    tokenizer_fingerprint: str
    tokenizer_files: dict[str, bytes] = field(repr=False)
    fim: FimTokens | None
    dtype: str
    device: str
    emulated_forward_seconds: float
    max_draft_tokens: int
    max_queue: int = 0  # Draft and Score calls the service holds at once; 0 = not reported
    model_fingerprint: str = ""  # derived from the weights; "" = not reported (model-free drafters)
