"""The drafter -> target token map of TLI: tokens whose canonical bytes exist in both vocabularies.

Timor et al., ICML 2025 (arXiv 2502.05202), Algorithm 4 restricts the drafter to the intersection of the
two vocabularies. Two tokens are "the same" when their canonical bytes (``canonical``) are identical, so
'Ġhello' (byte-level BPE), '▁hello' (SentencePiece) and ' hello' written any other way all meet, and a
byte-fallback '<0x0A>' meets a byte-level 'Ċ'. Special tokens have no bytes and are never mapped. The map
is injective: a byte string maps from the drafter's representative id to the target's representative id
(the ids each tokenizer itself would use), so other drafter ids of the same bytes stay unmapped.

The end-to-end check decodes every mapped pair with both tokenizers' own decoders: transformers'
pruned-LM-head TLI once scattered 39,236 of 39,237 drafter columns onto the wrong target ids (ALGORITHMS.md
§4), which only such a check catches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from coordinator.vocab.canonical import CanonicalVocab
from core.errors import InvalidArgumentError

# Entry of ``drafter_to_target`` for a drafter row with no target token of the same bytes
# (the same value as ``core.restrict.NOT_IN_INTERSECTION``).
NOT_IN_INTERSECTION = -1


@dataclass(frozen=True, eq=False)
class IntersectionMap:
    """``drafter_to_target[d]`` is the target id with the same canonical bytes as drafter id ``d``.

    It has one entry per drafter logit row (``drafter_rows``, at least the drafter tokenizer's size);
    rows without a token of the same bytes in the target, special tokens and padding rows hold
    ``NOT_IN_INTERSECTION``. Mapped target ids are distinct and below ``target_rows``.
    """

    drafter_to_target: npt.NDArray[np.int64]  # [drafter_rows]
    drafter_vocab_size: int  # ids the drafter's tokenizer defines
    target_rows: int

    @property
    def mapped_count(self) -> int:
        """Number of drafter ids in the intersection."""
        return int(np.count_nonzero(self.drafter_to_target != NOT_IN_INTERSECTION))

    @property
    def coverage(self) -> float:
        """Fraction of the drafter tokenizer's ids that are in the intersection."""
        return self.mapped_count / self.drafter_vocab_size if self.drafter_vocab_size else 0.0

    def mapped_pairs(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """(drafter ids, target ids) of the intersection, in ascending drafter id."""
        drafter_ids = np.flatnonzero(self.drafter_to_target != NOT_IN_INTERSECTION).astype(np.int64)
        return drafter_ids, self.drafter_to_target[drafter_ids]

    def target_to_drafter(self) -> npt.NDArray[np.int64]:  # [target_rows]
        """The inverse map over target rows (``NOT_IN_INTERSECTION`` where no drafter id maps)."""
        inverse = np.full(self.target_rows, NOT_IN_INTERSECTION, dtype=np.int64)
        drafter_ids, target_ids = self.mapped_pairs()
        inverse[target_ids] = drafter_ids
        return inverse


def build_intersection(
    drafter: CanonicalVocab,
    target: CanonicalVocab,
    drafter_rows: int | None = None,
    target_rows: int | None = None,
) -> IntersectionMap:
    """The injective drafter -> target map over identical canonical byte strings.

    ``drafter_rows`` / ``target_rows`` are the widths of the models' logits (default: the tokenizers'
    sizes); rows beyond a tokenizer are padding and never mapped.
    """
    drafter_rows = drafter.size if drafter_rows is None else drafter_rows
    target_rows = target.size if target_rows is None else target_rows
    if drafter_rows < 1:
        raise InvalidArgumentError("drafter_rows", f"must be >= 1, got {drafter_rows}")
    if target_rows < 1:
        raise InvalidArgumentError("target_rows", f"must be >= 1, got {target_rows}")
    drafter_to_target = np.full(drafter_rows, NOT_IN_INTERSECTION, dtype=np.int64)
    for data, drafter_id in drafter.representative.items():
        target_id = target.representative.get(data)
        if target_id is not None and drafter_id < drafter_rows and target_id < target_rows:
            drafter_to_target[drafter_id] = target_id
    return IntersectionMap(drafter_to_target, drafter.size, target_rows)


@dataclass(frozen=True)
class DecodeMismatch:
    """A mapped pair whose tokenizers decode it differently."""

    drafter_id: int
    target_id: int
    drafter_text: str
    target_text: str


@dataclass(frozen=True)
class DecodeCheck:
    """Outcome of :func:`check_intersection_decodes`.

    ``in_context_checked`` pairs were compared as they decode after an anchor token (every mapped pair);
    ``alone_checked`` of them also alone, where a single token's decode is well defined (valid UTF-8 and
    not a leading space that a SentencePiece decoder strips at the start of a text).
    """

    in_context_checked: int
    alone_checked: int
    mismatches: tuple[DecodeMismatch, ...]

    @property
    def ok(self) -> bool:
        """Whether every checked pair decoded identically."""
        return not self.mismatches


def decode_after_anchor(vocab: CanonicalVocab, token_ids: npt.NDArray[np.int64]) -> list[str]:
    """How each token decodes in the middle of a text: ``decode([anchor, t])`` minus the anchor's text.

    The anchor is the vocabulary's own token for "a", so no SentencePiece leading-space strip applies
    to the token and no byte of it joins the anchor's character.
    """
    anchor = vocab.representative.get(b"a")
    if anchor is None:
        raise InvalidArgumentError("tokenizer", "has no token for 'a' to decode tokens in context")
    prefix = vocab.decode_text([anchor])
    texts: list[str] = vocab.tokenizer.decode_batch(
        [[anchor, int(token_id)] for token_id in token_ids], skip_special_tokens=True
    )
    return [text[len(prefix) :] if text.startswith(prefix) else "\x00" + text for text in texts]


def decode_alone(vocab: CanonicalVocab, token_ids: npt.NDArray[np.int64]) -> list[str | None]:
    """Each token decoded on its own, with a stripped SentencePiece leading space put back explicitly.

    None where a lone token's text is not well defined: bytes that are not valid UTF-8.
    """
    texts: list[str] = vocab.tokenizer.decode_batch([[int(t)] for t in token_ids], skip_special_tokens=True)
    restored: list[str | None] = []
    for token_id, text in zip(token_ids, texts, strict=True):
        data = vocab.token_bytes[int(token_id)] or b""
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            restored.append(None)
            continue
        stripped = min(vocab.leading_strip, len(data) - len(data.lstrip(b" ")))
        restored.append(" " * stripped + text)
    return restored


@dataclass(frozen=True, eq=False)
class TokenDecodes:
    """What a tokenizer's own decoder makes of single tokens (:func:`token_decodes`).

    ``in_context[i]``: token ``i`` decoded after an anchor token; ``alone[i]``: decoded by itself with
    a stripped leading space restored, None where not well defined (see :func:`decode_alone`).
    """

    in_context: dict[int, str]
    alone: dict[int, str | None]


def token_decodes(vocab: CanonicalVocab, token_ids: npt.NDArray[np.int64] | None = None) -> TokenDecodes:
    """Decodes ``token_ids`` (default: every text token) both ways, for one or many decode checks."""
    if token_ids is None:
        token_ids = np.array([i for i in range(vocab.size) if vocab.is_text_token(i)], dtype=np.int64)
    ids = [int(token_id) for token_id in token_ids]
    in_context = dict(zip(ids, decode_after_anchor(vocab, token_ids), strict=True))
    alone = dict(zip(ids, decode_alone(vocab, token_ids), strict=True))
    return TokenDecodes(in_context, alone)


def check_intersection_decodes(
    drafter: CanonicalVocab,
    target: CanonicalVocab,
    intersection: IntersectionMap,
    drafter_decodes: TokenDecodes | None = None,
    target_decodes: TokenDecodes | None = None,
) -> DecodeCheck:
    """Decodes every mapped pair with both tokenizers and reports pairs whose texts differ.

    Each pair is compared in context (after an anchor token) and, where well defined, alone with the
    stripped leading space restored; a correct map has no mismatch. Precomputed ``token_decodes`` of
    either vocabulary may be passed to share the decoding work between checks.
    """
    drafter_ids, target_ids = intersection.mapped_pairs()
    drafter_decodes = drafter_decodes or token_decodes(drafter, drafter_ids)
    target_decodes = target_decodes or token_decodes(target, target_ids)
    mismatches: list[DecodeMismatch] = []
    alone_checked = 0
    for drafter_id, target_id in zip(drafter_ids.tolist(), target_ids.tolist(), strict=True):
        pairs = [(drafter_decodes.in_context[drafter_id], target_decodes.in_context[target_id])]
        drafter_alone, target_alone = drafter_decodes.alone[drafter_id], target_decodes.alone[target_id]
        if drafter_alone is not None and target_alone is not None:
            alone_checked += 1
            pairs.append((drafter_alone, target_alone))
        for drafter_text, target_text in pairs:
            if drafter_text != target_text:
                mismatches.append(DecodeMismatch(drafter_id, target_id, drafter_text, target_text))
                break
    return DecodeCheck(len(drafter_ids), alone_checked, tuple(mismatches))
