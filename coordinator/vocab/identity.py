"""Same-vocabulary detection: compares tokenizers, never ``vocab_size``.

Two models share a vocabulary when every id means the same token and text encodes to the same ids:
same model type and options, same pieces at every shared id, same merges, same normalizer,
pre-tokenizer and decoder, same added and special tokens. Sizes alone mislead both ways: Qwen2.5-7B has
152,064 logit rows and Qwen2.5-0.5B 151,936 with one tokenizer, while SmolLM2 and StarCoder both have
49,152 byte-level BPE tokens and different merges. Padding is not a difference: logit rows beyond the
tokenizer, and ids at the end of one tokenizer that only hold placeholders (llama.cpp's '[PAD151646]',
'<|extra_3|>', '<unused12>', reserved special tokens), so such pairs take the exact same-vocabulary path
restricted to the shared ids.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from coordinator.vocab.canonical import CanonicalVocab, TokenKind, component_config

_PLACEHOLDER = re.compile(
    r"\[PAD\d+\]|<\|?(?:extra|unused|reserved_special_token|reserved|pad|dummy)_?\d*\|?>",
    re.IGNORECASE,
)
_ADDED_FLAGS = ("content", "special", "single_word", "lstrip", "rstrip", "normalized")


@dataclass(frozen=True)
class VocabularyMatch:
    """Outcome of :func:`compare_vocabularies`.

    ``same``: ids ``[0, shared_size)`` mean the same tokens and text encodes identically, so standard
    speculative decoding over those ids is exact; ids at or above ``shared_size`` are padding.
    ``reason`` says why, naming the first difference when not the same.
    """

    same: bool
    reason: str
    shared_size: int


def compare_vocabularies(
    first: CanonicalVocab,
    second: CanonicalVocab,
    first_rows: int | None = None,
    second_rows: int | None = None,
) -> VocabularyMatch:
    """Decides whether two tokenizers share one vocabulary up to padding.

    ``first_rows`` / ``second_rows`` are the models' logit widths (default: the tokenizers' sizes).
    """
    shared = min(first.size, second.size)
    difference = (
        _config_difference(first.tokenizer, second.tokenizer)
        or _token_difference(first, second, shared)
        or _padding_difference(first, shared)
        or _padding_difference(second, shared)
        or _model_difference(first.tokenizer, second.tokenizer)
    )
    if difference:
        return VocabularyMatch(False, f"different tokenizers: {difference}", 0)
    notes = _padding_notes(first, second, first_rows, second_rows)
    if not notes:
        return VocabularyMatch(True, "identical tokenizers", shared)
    return VocabularyMatch(True, "same vocabulary, padding only: " + "; ".join(notes), shared)


def _config_difference(first: Any, second: Any) -> str | None:
    """The first of normalizer, pre-tokenizer and decoder that differs."""
    for name in ("normalizer", "pre_tokenizer", "decoder"):
        if component_config(getattr(first, name)) != component_config(getattr(second, name)):
            return f"{name.replace('_', '-')}s differ"
    return None


def _added_flags(added: dict[int, Any], token_id: int) -> tuple[Any, ...] | None:
    """The flags of an added token (None for a model-vocabulary token)."""
    token = added.get(token_id)
    return None if token is None else tuple(getattr(token, flag) for flag in _ADDED_FLAGS)


def _token_difference(first: CanonicalVocab, second: CanonicalVocab, shared: int) -> str | None:
    """The first shared id whose piece, kind or added-token flags differ."""
    first_added = first.tokenizer.get_added_tokens_decoder()
    second_added = second.tokenizer.get_added_tokens_decoder()
    for token_id in range(shared):
        first_piece = first.tokenizer.id_to_token(token_id)
        second_piece = second.tokenizer.id_to_token(token_id)
        if first_piece != second_piece or first.kinds[token_id] != second.kinds[token_id]:
            return f"token {token_id} is {first_piece!r} vs {second_piece!r}"
        if _added_flags(first_added, token_id) != _added_flags(second_added, token_id):
            return f"token {token_id} ({first_piece!r}) is added with other flags"
    return None


def _padding_difference(vocab: CanonicalVocab, shared: int) -> str | None:
    """An id beyond the shared range that is a real token rather than a placeholder."""
    for token_id in range(shared, vocab.size):
        if vocab.kinds[token_id] == TokenKind.ABSENT:
            continue
        piece = vocab.tokenizer.id_to_token(token_id)
        if not _PLACEHOLDER.fullmatch(piece):
            return f"token {token_id} ({piece!r}) exists in one tokenizer only"
    return None


def _model_difference(first: Any, second: Any) -> str | None:
    """Differences of the model type, its options or its merges (the expensive comparison, last)."""
    first_state, second_state = first.model.__getstate__(), second.model.__getstate__()
    if first_state == second_state:
        return None
    first_model, second_model = json.loads(first_state), json.loads(second_state)
    first_options = {k: v for k, v in first_model.items() if k not in ("vocab", "merges")}
    second_options = {k: v for k, v in second_model.items() if k not in ("vocab", "merges")}
    if first_options != second_options:
        return f"model options differ ({first_options} vs {second_options})"
    first_merges = first_model.get("merges")
    second_merges = second_model.get("merges")
    if first_merges != second_merges:
        return f"merges differ ({len(first_merges or [])} vs {len(second_merges or [])})"
    return None


def _padding_notes(
    first: CanonicalVocab, second: CanonicalVocab, first_rows: int | None, second_rows: int | None
) -> list[str]:
    """Human-readable padding differences (empty when there are none)."""
    notes: list[str] = []
    if first.size != second.size:
        notes.append(f"placeholder ids above {min(first.size, second.size)} ({first.size} vs {second.size})")
    rows = (
        first.size if first_rows is None else first_rows,
        second.size if second_rows is None else second_rows,
    )
    if rows != (first.size, second.size) and rows[0] != rows[1]:
        notes.append(f"logit rows {rows[0]} vs {rows[1]}")
    return notes
