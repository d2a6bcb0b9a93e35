"""Canonical token bytes: the exact byte string each token id contributes to decoded text.

Token strings are not text. Byte-level BPE spells bytes with the GPT-2 alphabet ('Ġ' is a space, 'Ċ' a
newline; see ``bytelevel``); SentencePiece writes a space as '▁' and, with byte fallback, spells a byte
that has no piece of its own as a token '<0x0A>' that stands for one raw byte. The canonical bytes of a
token are what its decoder turns it into in the middle of a text, before bytes are joined into
characters, so a token that ends inside a multi-byte character keeps its exact bytes (an incomplete UTF-8
fragment) instead of a replacement character. Special and control tokens (BOS, EOS, chat markers, padding
placeholders the tokenizer marks special) have no canonical bytes: they are never part of the text and
are never mapped across vocabularies. Non-special added tokens decode to their own content (a decoder
still applies to them, as ``tokenizers`` does).

The scheme is read from the tokenizer's decoder (``ByteLevel`` versus a ``Replace('▁', ' ')`` /
``Metaspace`` chain with optional ``ByteFallback``), never guessed from a model name.

**The SentencePiece leading space (dummy prefix).** SentencePiece-style tokenizers (Llama-2, Phi-3, with
``prepend_scheme`` 'first'/'always' or a ``Prepend('▁')`` normalizer) add a '▁' before the text they
encode, so ``encode("Hello")`` is ``['▁Hello']`` whose canonical bytes are ``b" Hello"``; their decoder
then drops one leading space of the whole decoded text (``Strip`` after ``Fuse``, or ``Metaspace``'s
first-token rule), so ``decode(encode("Hello")) == "Hello"``. Canonical bytes always keep that space:
they describe a token in the middle of a text. Hence ``decode(ids)`` equals the concatenated canonical
bytes with at most ``leading_strip`` leading spaces removed, a single token '▁Hello' decodes alone to
"Hello" but contributes " Hello" after another token, and encoding a window that starts in the middle of
a text needs care (see ``retokenize``). Gemma-3's tokenizer adds no dummy prefix and strips nothing.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from coordinator.vocab.bytelevel import byte_level_bytes
from core.errors import InvalidArgumentError

# The character SentencePiece writes for a space.
SPACE_MARKER = "\u2581"

_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


class TokenKind(enum.IntEnum):
    """What a token id is; ``NORMAL < ADDED < BYTE`` is also the preference among tokens of equal bytes."""

    NORMAL = 0  # a piece of the model's vocabulary
    ADDED = 1  # a non-special added token: decodes to its own content
    BYTE = 2  # a byte-fallback token '<0xHH>': exactly one raw byte
    SPECIAL = 3  # special / control token: no bytes, never mapped
    ABSENT = 4  # an id below the tokenizer's size that names no token


class DecodeScheme(enum.Enum):
    """How token strings become bytes."""

    BYTE_LEVEL = "byte_level"  # GPT-2 byte alphabet
    SENTENCEPIECE = "sentencepiece"  # '▁' for a space, optional '<0xHH>' byte fallback


class DummyPrefix(enum.Enum):
    """Whether encoding adds a leading space to the text (SentencePiece's dummy prefix)."""

    NONE = "none"
    IF_MISSING = "if_missing"  # added unless the text already starts with a space
    ALWAYS = "always"  # added even before an existing space (a ``Prepend('▁')`` normalizer)


def backend_of(tokenizer: Any) -> Any:
    """The ``tokenizers.Tokenizer`` behind a transformers tokenizer (or the argument itself)."""
    backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
    if not hasattr(backend, "encode") or not hasattr(backend, "id_to_token"):
        raise InvalidArgumentError(
            "tokenizer", "must be a tokenizers.Tokenizer or a fast transformers tokenizer"
        )
    return backend


def component_config(component: Any) -> Any:
    """The JSON configuration of a tokenizer component (decoder, normalizer, pre-tokenizer), or None."""
    if component is None:
        return None
    # The components' pickled state is their tokenizer.json serialization.
    return json.loads(component.__getstate__())


@dataclass(frozen=True)
class _DecoderPlan:
    """A decoder chain split into per-token steps and text-level leading-space stripping."""

    scheme: DecodeScheme
    per_token: tuple[dict[str, Any], ...]
    leading_strip: int


def _flatten(config: Any, key: str) -> list[dict[str, Any]]:
    """The steps of a (possibly nested) ``Sequence`` component, in order."""
    if config is None:
        return []
    if config.get("type") == "Sequence":
        return [step for inner in config[key] for step in _flatten(inner, key)]
    return [config]


def _decoder_plan(decoder_config: Any) -> _DecoderPlan:
    """Interprets a decoder chain; raises for decoders whose output is not a plain concatenation."""
    per_token: list[dict[str, Any]] = []
    leading_strip = 0
    fused = False
    scheme: DecodeScheme | None = None
    for step in _flatten(decoder_config, "decoders"):
        kind = step["type"]
        if kind == "Fuse":
            fused = True
        elif kind == "Strip" and fused:
            leading_strip = max(leading_strip, _text_level_strip(step))
        elif kind in ("ByteLevel", "Replace", "Metaspace", "ByteFallback", "Strip"):
            scheme = scheme or _step_scheme(step)
            per_token.append(step)
            if kind == "Metaspace" and step.get("prepend_scheme", "always") != "never":
                # Approximation: a Metaspace decoder drops every '▁' of the first token, which is
                # one leading space for the usual '▁word' piece.
                leading_strip = 1
        else:
            raise InvalidArgumentError("tokenizer", f"unsupported decoder step {kind!r}")
    if scheme is None:
        raise InvalidArgumentError("tokenizer", "decoder is neither byte-level nor SentencePiece ('▁')")
    return _DecoderPlan(scheme, tuple(per_token), leading_strip)


def _step_scheme(step: dict[str, Any]) -> DecodeScheme | None:
    """The scheme a per-token decoder step reveals, if any."""
    if step["type"] == "ByteLevel":
        return DecodeScheme.BYTE_LEVEL
    if step["type"] == "Replace":
        marker = step["pattern"].get("String")
        if marker is None:
            raise InvalidArgumentError("tokenizer", "regex Replace decoders are not supported")
        return DecodeScheme.SENTENCEPIECE if marker == SPACE_MARKER else None
    if step["type"] == "Metaspace":
        return DecodeScheme.SENTENCEPIECE if step["replacement"] == SPACE_MARKER else None
    return None


def _text_level_strip(step: dict[str, Any]) -> int:
    """Leading spaces a ``Strip`` after ``Fuse`` removes from the whole decoded text."""
    if step["content"] != " " or step["stop"] != 0:
        raise InvalidArgumentError("tokenizer", f"unsupported text-level strip decoder {step}")
    return int(step["start"])


def _piece_bytes(piece: str, plan: _DecoderPlan) -> tuple[bytes, bool]:
    """(canonical bytes, whether the piece is a byte-fallback token) of one token string."""
    text = piece
    for step in plan.per_token:
        kind = step["type"]
        if kind == "ByteLevel":
            return byte_level_bytes(text), False
        if kind == "Replace":
            text = text.replace(step["pattern"]["String"], step["content"])
        elif kind == "Metaspace":
            text = text.replace(step["replacement"], " ")
        elif kind == "ByteFallback":
            match = _BYTE_TOKEN.fullmatch(text)
            if match:
                return bytes([int(match.group(1), 16)]), True
        elif kind == "Strip":
            text = _strip_chars(text, step["content"], int(step["start"]), int(step["stop"]))
    return text.encode("utf-8"), False


def _strip_chars(text: str, char: str, start: int, stop: int) -> str:
    """Removes up to ``start`` leading and ``stop`` trailing copies of ``char``."""
    begin = 0
    while begin < min(start, len(text)) and text[begin] == char:
        begin += 1
    end = len(text)
    while end > begin and len(text) - end < stop and text[end - 1] == char:
        end -= 1
    return text[begin:end]


def _dummy_prefix(normalizer_config: Any, pre_tokenizer_config: Any) -> DummyPrefix:
    """Reads the dummy-prefix behaviour from the normalizer and pre-tokenizer."""
    for step in _flatten(normalizer_config, "normalizers"):
        if step["type"] == "Prepend" and step["prepend"] in (SPACE_MARKER, " "):
            return DummyPrefix.ALWAYS
    for step in _flatten(pre_tokenizer_config, "pretokenizers"):
        if step["type"] == "Metaspace":
            scheme = step.get("prepend_scheme")
            if scheme is None:
                scheme = "always" if step.get("add_prefix_space", True) else "never"
            if scheme != "never":
                return DummyPrefix.IF_MISSING
        if step["type"] == "ByteLevel" and step.get("add_prefix_space", False):
            return DummyPrefix.IF_MISSING
    return DummyPrefix.NONE


@dataclass(frozen=True, eq=False, repr=False)
class CanonicalVocab:
    """Canonical bytes of every token id of one tokenizer, with what is needed to encode text exactly.

    ``token_bytes[i]`` is ``None`` for special and absent ids, else the exact bytes token ``i``
    contributes to a text; ``kinds[i]`` says which. ``representative`` maps each byte string to the one
    id the tokenizer itself would use for it (what ``encode`` returns where that is a single token of
    those bytes, else the first by ``TokenKind`` then by id), so maps built from it are injective.
    """

    tokenizer: Any  # tokenizers.Tokenizer
    scheme: DecodeScheme
    dummy_prefix: DummyPrefix
    leading_strip: int
    token_bytes: tuple[bytes | None, ...]
    kinds: npt.NDArray[np.uint8]  # [size]
    representative: dict[bytes, int]
    max_token_bytes: int

    def __repr__(self) -> str:
        return (
            f"CanonicalVocab(scheme={self.scheme.value}, dummy_prefix={self.dummy_prefix.value}, "
            f"leading_strip={self.leading_strip}, size={self.size})"
        )

    @property
    def size(self) -> int:
        """Number of ids the tokenizer defines (its largest id + 1)."""
        return len(self.token_bytes)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, special_ids: Iterable[int] = ()) -> CanonicalVocab:
        """Builds the table from a ``tokenizers.Tokenizer`` or a fast transformers tokenizer.

        ``special_ids`` marks further ids special (e.g. EOS ids a model declares that its tokenizer
        does not flag).
        """
        backend = backend_of(tokenizer)
        plan = _decoder_plan(component_config(backend.decoder))
        dummy = _dummy_prefix(component_config(backend.normalizer), component_config(backend.pre_tokenizer))
        added = backend.get_added_tokens_decoder()
        size = max([backend.get_vocab_size(with_added_tokens=False), *(i + 1 for i in added)])
        forced_special = set(special_ids)
        token_bytes: list[bytes | None] = []
        kinds = np.empty(size, dtype=np.uint8)
        for token_id in range(size):
            kind, data = _classify(backend, plan, added.get(token_id), token_id, token_id in forced_special)
            kinds[token_id] = kind
            token_bytes.append(data)
        representative = _representatives(backend, token_bytes, kinds)
        longest = max((len(data) for data in representative), default=0)
        return cls(
            backend,
            plan.scheme,
            dummy,
            plan.leading_strip,
            tuple(token_bytes),
            kinds,
            representative,
            longest,
        )

    def kind(self, token_id: int) -> TokenKind:
        """The kind of one id."""
        return TokenKind(int(self.kinds[token_id]))

    def bytes_of(self, token_ids: Iterable[int]) -> bytes:
        """The concatenated canonical bytes of ``token_ids`` (special tokens contribute nothing)."""
        table = self.token_bytes
        return b"".join(table[i] or b"" for i in token_ids)

    def is_text_token(self, token_id: int) -> bool:
        """Whether the id carries text (not special, not absent, not beyond the tokenizer)."""
        return 0 <= token_id < self.size and self.token_bytes[token_id] is not None

    def encode_plain(self, text: str) -> list[int]:
        """``encode`` without special tokens (no BOS/EOS), as the tokenizer itself would."""
        ids: list[int] = self.tokenizer.encode(text, add_special_tokens=False).ids
        return ids

    def decode_text(self, token_ids: Sequence[int]) -> str:
        """What the tokenizer's own decoder returns for ``token_ids`` (special tokens skipped)."""
        text: str = self.tokenizer.decode(list(token_ids), skip_special_tokens=True)
        return text

    def greedy_tokens(self, data: bytes) -> list[int] | None:
        """Longest-match tokens whose canonical bytes concatenate to exactly ``data``; None if impossible.

        Always succeeds for byte-level vocabularies and SentencePiece vocabularies with byte fallback,
        which have a token for every single byte.
        """
        tokens: list[int] = []
        position = 0
        while position < len(data):
            for length in range(min(self.max_token_bytes, len(data) - position), 0, -1):
                token_id = self.representative.get(data[position : position + length])
                if token_id is not None:
                    tokens.append(token_id)
                    position += length
                    break
            else:
                return None
        return tokens


def _classify(
    backend: Any, plan: _DecoderPlan, added: Any, token_id: int, forced_special: bool
) -> tuple[TokenKind, bytes | None]:
    """The kind and canonical bytes of one id."""
    piece = backend.id_to_token(token_id)
    if piece is None:
        return TokenKind.ABSENT, None
    if forced_special or (added is not None and added.special):
        return TokenKind.SPECIAL, None
    data, is_byte = _piece_bytes(piece, plan)
    if is_byte:
        return TokenKind.BYTE, data
    return (TokenKind.ADDED if added is not None else TokenKind.NORMAL), data


def _representatives(
    backend: Any, token_bytes: Sequence[bytes | None], kinds: npt.NDArray[np.uint8]
) -> dict[bytes, int]:
    """One id per distinct non-empty byte string (see ``CanonicalVocab.representative``)."""
    groups: dict[bytes, list[int]] = {}
    for token_id, data in enumerate(token_bytes):
        if data:
            groups.setdefault(data, []).append(token_id)
    chosen: dict[bytes, int] = {}
    for data, ids in groups.items():
        chosen[data] = ids[0] if len(ids) == 1 else _preferred(backend, data, ids, kinds)
    return chosen


def _preferred(backend: Any, data: bytes, ids: list[int], kinds: npt.NDArray[np.uint8]) -> int:
    """Among ids of equal bytes: the one ``encode`` produces for them alone, else by kind then id."""
    try:
        encoded = backend.encode(data.decode("utf-8"), add_special_tokens=False).ids
    except UnicodeDecodeError:
        encoded = []
    if len(encoded) == 1 and encoded[0] in ids:
        return int(encoded[0])
    return min(ids, key=lambda token_id: (int(kinds[token_id]), token_id))
