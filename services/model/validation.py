"""Checks of incoming model-service requests; each failure names the offending field."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from polyspec.v1 import common_pb2, model_pb2

from core.errors import InvalidArgumentError
from services.model.masks import bitmap_bytes

PROBS_SUM_TOLERANCE = 1e-3
MAX_SEQUENCE_ID_CHARS = 512
MAX_TOKEN_MASK_ID_CHARS = 512


@dataclass(frozen=True)
class RequestLimits:
    """The loaded model's limits that requests are checked against."""

    vocab_size: int
    max_context_tokens: int
    max_draft_tokens: int


def check_token_ids(field: str, token_ids: Iterable[int], vocab_size: int) -> None:
    """Every id lies in ``[0, vocab_size)``."""
    for index, token in enumerate(token_ids):
        if not 0 <= token < vocab_size:
            raise InvalidArgumentError(f"{field}[{index}]", f"token id {token} is outside [0, {vocab_size})")


def check_context(context: model_pb2.TokenContext, limits: RequestLimits) -> None:
    """A named sequence and in-range tokens no longer than the model's context."""
    if not context.sequence_id:
        raise InvalidArgumentError("context.sequence_id", "must not be empty")
    if len(context.sequence_id) > MAX_SEQUENCE_ID_CHARS:
        raise InvalidArgumentError(
            "context.sequence_id", f"must be at most {MAX_SEQUENCE_ID_CHARS} characters"
        )
    if len(context.tokens) > limits.max_context_tokens:
        raise InvalidArgumentError(
            "context.tokens",
            f"{len(context.tokens)} tokens exceed max_context_tokens {limits.max_context_tokens}",
        )
    check_token_ids("context.tokens", context.tokens, limits.vocab_size)


def check_draft_request(request: model_pb2.DraftRequest, limits: RequestLimits) -> None:
    """Validates a Draft request against the model's limits."""
    check_context(request.context, limits)
    if not 1 <= request.max_draft_tokens <= limits.max_draft_tokens:
        raise InvalidArgumentError(
            "max_draft_tokens",
            f"must lie in [1, {limits.max_draft_tokens}], got {request.max_draft_tokens}",
        )
    check_token_ids("stop_token_ids", request.stop_token_ids, limits.vocab_size)
    threshold = request.confidence_threshold
    if not math.isfinite(threshold) or not 0 <= threshold <= 1:
        raise InvalidArgumentError("confidence_threshold", f"must lie in [0, 1], got {threshold}")
    if request.max_support < 0:
        raise InvalidArgumentError(
            "max_support", f"must be >= 0 (0 = server default), got {request.max_support}"
        )
    if len(request.token_mask_id) > MAX_TOKEN_MASK_ID_CHARS:
        raise InvalidArgumentError(
            "token_mask_id", f"must be at most {MAX_TOKEN_MASK_ID_CHARS} characters (empty = no mask)"
        )
    check_stop_classifier_fields(request)


def check_stop_classifier_fields(request: model_pb2.DraftRequest) -> None:
    """The stop classifier's id (bounded length) and a threshold in [0, 1) (0 = the classifier's own)."""
    if len(request.stop_classifier_id) > MAX_TOKEN_MASK_ID_CHARS:
        raise InvalidArgumentError(
            "stop_classifier_id", f"must be at most {MAX_TOKEN_MASK_ID_CHARS} characters (empty = none)"
        )
    threshold = request.stop_classifier_threshold
    if not math.isfinite(threshold) or not 0 <= threshold < 1:
        raise InvalidArgumentError("stop_classifier_threshold", f"must lie in [0, 1), got {threshold}")
    if threshold and not request.stop_classifier_id:
        raise InvalidArgumentError("stop_classifier_threshold", "is set but no stop_classifier_id is named")


def check_sparse_distribution(
    field: str, distribution: common_pb2.SparseDistribution, vocab_size: int
) -> None:
    """Equal-length ids and probs, distinct ids in range, probs >= 0 summing to about 1.

    A repeated id would make the distribution ambiguous (the dense form would keep one of its
    probabilities, or add them, depending on the code path), so it is refused.
    """
    if len(distribution.token_ids) != len(distribution.probs):
        raise InvalidArgumentError(
            field,
            f"token_ids ({len(distribution.token_ids)}) and probs ({len(distribution.probs)}) "
            "differ in length",
        )
    check_token_ids(f"{field}.token_ids", distribution.token_ids, vocab_size)
    first_index: dict[int, int] = {}
    for index, token in enumerate(distribution.token_ids):
        earlier = first_index.setdefault(token, index)
        if earlier != index:
            raise InvalidArgumentError(
                f"{field}.token_ids[{index}]",
                f"repeats token id {token} (already at token_ids[{earlier}]); each id may appear once",
            )
    for index, prob in enumerate(distribution.probs):
        if not math.isfinite(prob) or prob < 0:
            raise InvalidArgumentError(f"{field}.probs[{index}]", f"must be finite and >= 0, got {prob}")
    total = math.fsum(distribution.probs)
    if abs(total - 1.0) > PROBS_SUM_TOLERANCE:
        raise InvalidArgumentError(f"{field}.probs", f"must sum to 1, got {total:.6g}")


def check_score_request(request: model_pb2.ScoreRequest, limits: RequestLimits) -> None:
    """Validates a Score request against the model's limits."""
    check_context(request.context, limits)
    check_token_ids("candidate_tokens", request.candidate_tokens, limits.vocab_size)
    if request.draft_probs and len(request.draft_probs) != len(request.candidate_tokens):
        raise InvalidArgumentError(
            "draft_probs",
            f"must be empty or hold one distribution per candidate ({len(request.candidate_tokens)}), "
            f"got {len(request.draft_probs)}",
        )
    for index, distribution in enumerate(request.draft_probs):
        check_sparse_distribution(f"draft_probs[{index}]", distribution, limits.vocab_size)


def check_release_request(request: model_pb2.ReleaseRequest) -> None:
    """Every named sequence id is non-empty."""
    for index, sequence_id in enumerate(request.sequence_ids):
        if not sequence_id:
            raise InvalidArgumentError(f"sequence_ids[{index}]", "must not be empty")


def check_set_token_mask_request(request: model_pb2.SetTokenMaskRequest, limits: RequestLimits) -> None:
    """A non-empty mask id and a bitmap of at most ceil(vocab_size / 8) bytes naming only real token ids."""
    if not request.mask_id:
        raise InvalidArgumentError("mask_id", "must not be empty")
    if len(request.mask_id) > MAX_TOKEN_MASK_ID_CHARS:
        raise InvalidArgumentError("mask_id", f"must be at most {MAX_TOKEN_MASK_ID_CHARS} characters")
    bitmap = request.allowed_bitmap
    longest = bitmap_bytes(limits.vocab_size)
    if len(bitmap) > longest:
        raise InvalidArgumentError(
            "allowed_bitmap",
            f"{len(bitmap)} bytes exceed ceil(vocab_size / 8) = {longest} (vocab_size {limits.vocab_size})",
        )
    spare_bits = 8 * longest - limits.vocab_size
    if len(bitmap) == longest and spare_bits and bitmap[-1] >> (8 - spare_bits):
        raise InvalidArgumentError(
            "allowed_bitmap", f"sets a bit of a token id >= vocab_size {limits.vocab_size}"
        )


MAX_CLASSIFIER_BYTES = 1 << 20  # a logistic or small MLP artifact is a few kilobytes


def check_set_stop_classifier_request(request: model_pb2.SetStopClassifierRequest) -> None:
    """A non-empty bounded id, and spec and weights within ``MAX_CLASSIFIER_BYTES`` (parsed by the store)."""
    if not request.classifier_id:
        raise InvalidArgumentError("classifier_id", "must not be empty")
    if len(request.classifier_id) > MAX_TOKEN_MASK_ID_CHARS:
        raise InvalidArgumentError("classifier_id", f"must be at most {MAX_TOKEN_MASK_ID_CHARS} characters")
    for field, size in (("spec_json", len(request.spec_json)), ("weights", len(request.weights))):
        if size > MAX_CLASSIFIER_BYTES:
            raise InvalidArgumentError(field, f"{size} bytes exceed {MAX_CLASSIFIER_BYTES}")
