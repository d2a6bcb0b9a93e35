"""Toy LMs over two different toy tokenizers, keyed by the text so far, and the target's exact law.

Each LM is an explicit next-token table over a small support of one vocabulary's ids; the row is chosen by
the bytes the context ends with (first matching rule), so it is the same for every tokenization of one
text. The target (byte-level BPE ids) and the drafter (SentencePiece ids, byte fallback) speak about the
same words, ' hello', ' the', ' there' and an 'é' written as two raw bytes, but split them differently
(' he' + 'llo' re-tokenizes as ' hello'; ' he' and 'llo' have no byte-level twin), so drafts are
re-tokenized non-trivially and a draft may end inside a character.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from torch import Tensor

from coordinator.vocab.canonical import CanonicalVocab
from core.sampling import SamplingConfig
from tests.unit.verify.verify_toys import reference_warp

NUM_OUTPUT_TOKENS = 3

SPACE_MARKER = "\u2581"

# A rule: (suffix the context's bytes end with, None for the empty context; logits by token bytes).
RuleSpec = tuple[bytes | None, Mapping[bytes, float]]


@dataclass(frozen=True, eq=False)
class TextLM:
    """Next-token logits over ``support`` (ascending ids of ``vocab``), chosen by the context's bytes."""

    vocab: CanonicalVocab
    support: tuple[int, ...]
    rules: tuple[tuple[bytes | None, tuple[float, ...]], ...]  # the first match wins; b"" matches all
    _full: dict[bytes, Tensor] = field(default_factory=dict, repr=False)

    def support_logits(self, text: bytes) -> tuple[float, ...]:
        """Logits over ``support`` after a context spelling ``text``."""
        for suffix, logits in self.rules:
            if (suffix is None and not text) or (suffix is not None and text.endswith(suffix)):
                return logits
        raise AssertionError(f"no rule matches {text!r}")

    def full_logits(self, text: bytes) -> Tensor:  # [vocab.size] float32
        """Logits over the whole vocabulary (-inf outside ``support``), as a model would return them."""
        if text not in self._full:
            row = torch.full((self.vocab.size,), -math.inf, dtype=torch.float32)
            row[list(self.support)] = torch.tensor(self.support_logits(text), dtype=torch.float32)
            self._full[text] = row
        return self._full[text]

    def column(self, token_id: int) -> int:
        """Index of a support token among the support."""
        return self.support.index(token_id)


def table_lm(vocab: CanonicalVocab, rules: Sequence[RuleSpec]) -> TextLM:
    """A TextLM from rules written with token bytes (each must be a token of ``vocab``)."""
    ids = {data: vocab.representative[data] for _, row in rules for data in row}
    support = tuple(sorted(set(ids.values())))
    built = []
    for suffix, row in rules:
        logits = [-math.inf] * len(support)
        for data, logit in row.items():
            logits[support.index(ids[data])] = logit
        built.append((suffix, tuple(logits)))
    return TextLM(vocab, support, tuple(built))


def uniform_lm(vocab: CanonicalVocab) -> TextLM:
    """Equal logits on every id of the vocabulary, special and byte tokens included."""
    return TextLM(vocab, tuple(range(vocab.size)), ((b"", (0.0,) * vocab.size),))


def restrict_lm(lm: TextLM, banned: Sequence[bytes]) -> TextLM:
    """The same LM with the tokens spelled ``banned`` removed (each row keeps a finite logit)."""
    drop = {lm.vocab.representative[data] for data in banned}
    rules = []
    for suffix, logits in lm.rules:
        row = tuple(-math.inf if t in drop else x for t, x in zip(lm.support, logits, strict=True))
        assert any(math.isfinite(x) for x in row), f"rule {suffix!r} keeps no token"
        rules.append((suffix, row))
    return TextLM(lm.vocab, lm.support, tuple(rules))


def disjoint_word_toy() -> Tokenizer:
    """A SentencePiece-style word-level tokenizer whose words the byte-level toy has no token for."""
    words = ["zebra", "quokka", "yak", "gnu"]
    vocab = {"<unk>": 0, **{SPACE_MARKER + word: i + 1 for i, word in enumerate(words)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.add_special_tokens(["<unk>"])
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE_MARKER, prepend_scheme="first")
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace(SPACE_MARKER, " "), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return tokenizer


DISJOINT_DRAFTER_RULES: tuple[RuleSpec, ...] = (
    (None, {b" zebra": 0.5, b" quokka": 0.0, b" yak": -0.5}),
    (b"", {b" gnu": 0.3, b" zebra": 0.0, b" yak": 0.2}),
)

# The target: byte-level BPE ids. 'é' only as the two raw bytes C3 A9.
TARGET_RULES: tuple[RuleSpec, ...] = (
    (None, {b" the": 0.8, b" hello": 1.0, b" ": 0.3, b"he": 0.0, b" there": -0.5}),
    (b"\xc3", {b"\xa9": 2.5, b"\xc3": -1.0, b" the": -1.5}),
    (b" ", {b"\xc3": 1.0, b"he": 0.7, b" the": -0.5, b"ll": -1.0}),
    (b"he", {b"ll": 1.2, b" hello": 0.2, b" the": 0.0, b" there": -0.3}),
    (b"", {b" the": 0.6, b" there": 0.2, b" hello": 0.5, b" ": 0.3, b"he": -0.2, b"\xc3": -0.7}),
)

# The drafter: SentencePiece ids. After ' he' all its mass is on 'llo', which the target vocabulary lacks.
DRAFTER_RULES: tuple[RuleSpec, ...] = (
    (None, {b" the": 1.0, b" hello": 0.8, b" he": 0.6, b" ": 0.5, b"he": -0.5}),
    (b" he", {b"llo": 2.0}),
    (b"\xc3", {b"\xa9": 2.0, b"\xc3": -1.0}),
    (b" ", {b"\xc3": 1.0, b"he": 0.8, b" the": -1.0}),
    (b"he", {b"llo": 0.5, b"re": 1.0, b" hello": 0.3, b"ll": 0.6}),
    (b"", {b" the": 0.5, b" there": 0.3, b" hello": 0.6, b" ": 0.2, b" he": 0.4}),
)

# Characters of two and three bytes ('é' = C3 A9, '€' = E2 82 AC), spelled byte by byte by both LMs.
MULTIBYTE_TARGET_RULES: tuple[RuleSpec, ...] = (
    (None, {b" ": 0.0, b" the": 0.5, b"\xe2": 0.3, b"\xc3": 0.2}),
    (b"\xc3", {b"\xa9": 2.0, b" ": -1.0}),
    (b"\xe2\x82", {b"\xac": 2.0, b" ": -1.0}),
    (b"\xe2", {b"\x82": 2.0, b"\xa9": -1.0}),
    (b" ", {b"\xc3": 0.5, b"\xe2": 0.5, b" the": -0.5}),
    (b"", {b" ": 0.5, b" the": 0.2, b"\xe2": 0.0}),
)
MULTIBYTE_DRAFTER_RULES: tuple[RuleSpec, ...] = (
    (None, {b" ": 0.3, b"\xe2": 0.6, b"\xc3": 0.4, b" the": 0.0}),
    (b"\xc3", {b"\xa9": 1.5, b"\xac": -0.5}),
    (b"\xe2\x82", {b"\xac": 1.5, b" ": -1.0}),
    (b"\xe2", {b"\x82": 1.5, b"\xa9": -0.5}),
    (b" ", {b"\xc3": 0.8, b"\xe2": 0.8, b" the": 0.0}),
    (b"", {b" ": 0.8, b"\xe2": 0.4, b"\xc3": 0.3}),
)


def exact_law(lm: TextLM, config: SamplingConfig, num_tokens: int = NUM_OUTPUT_TOKENS) -> np.ndarray:
    """The LM's joint law over its first ``num_tokens`` tokens after the warpers, flattened.

    Outcome codes are support indices in base ``len(support)``, the first token most significant.
    """
    size = len(lm.support)
    cache: dict[bytes, np.ndarray] = {}

    def next_law(text: bytes) -> np.ndarray:
        if text not in cache:
            cache[text] = reference_warp(lm.support_logits(text), config)
        return cache[text]

    law = np.zeros(size**num_tokens)
    for code, columns in enumerate(itertools.product(range(size), repeat=num_tokens)):
        prob, text = 1.0, b""
        for column in columns:
            prob *= float(next_law(text)[column])
            if prob == 0.0:
                break
            text += lm.vocab.token_bytes[lm.support[column]] or b""
        law[code] = prob
    return law


def outcome_code(lm: TextLM, tokens: Sequence[int]) -> int:
    """The code ``exact_law`` gives the token sequence (ids of ``lm.vocab``)."""
    code = 0
    for token in tokens:
        code = code * len(lm.support) + lm.column(token)
    return code


def greedy_tokens(lm: TextLM, num_tokens: int = NUM_OUTPUT_TOKENS) -> list[int]:
    """The LM's argmax decoding (the first maximum, as ``torch.argmax`` over full rows)."""
    tokens: list[int] = []
    for _ in range(num_tokens):
        logits = lm.support_logits(lm.vocab.bytes_of(tokens))
        tokens.append(lm.support[max(range(len(logits)), key=lambda i: (logits[i], -i))])
    return tokens
