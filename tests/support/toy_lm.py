"""Toy language models: explicit next-token tables, so a target's exact output law can be enumerated.

A toy LM (``ToyLM``) gives the logits of the next token after a context of its own ids; ids outside
``support`` always get -inf. Three kinds:

- ``TableLM``: logits read from a table keyed by the position and the last two tokens. ``random_lm`` fills
  it with seeded noise (the verification tests); ``word_lm`` builds the coordinator tests' model over the
  word-level toy tokenizer (position-free; EOS likely right after "end", unlikely elsewhere).
- ``TextLM``: logits chosen by the bytes the context's text ends with (the first matching rule), over a
  few tokens of a real toy vocabulary, so two LMs over two tokenizers can speak about the same text
  (``text_lm``, the cross-vocabulary law tests).
- ``ReferenceLM``: seeded noise plus a bonus for the longest token that continues a reference text, so
  two models over different vocabularies agree often over long outputs (the coordinator's cross-vocabulary
  tests through real gRPC).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor

from coordinator.vocab.canonical import CanonicalVocab
from tests.support.toy_tokenizers import BOS, END, EOS, WORDS


class ToyLM(Protocol):
    """Next-token logits over ``vocab_size`` ids; -inf outside ``support``."""

    @property
    def vocab_size(self) -> int: ...

    @property
    def support(self) -> tuple[int, ...]: ...

    def logits(self, context: Sequence[int]) -> Tensor: ...  # [vocab_size]


@dataclass(frozen=True, eq=False)
class TableLM:
    """``table[min(position, last), two_back, previous]``; index ``vocab_size`` stands for "no token"."""

    table: Tensor  # [positions, vocab + 1, vocab + 1, vocab]

    @property
    def vocab_size(self) -> int:
        return int(self.table.shape[-1])

    @property
    def support(self) -> tuple[int, ...]:
        finite = torch.isfinite(self.table).reshape(-1, self.vocab_size).any(dim=0)
        return tuple(int(i) for i in torch.nonzero(finite).flatten().tolist())

    def logits(self, context: Sequence[int]) -> Tensor:  # [vocab]
        none = self.vocab_size
        previous = context[-1] if context else none
        two_back = context[-2] if len(context) >= 2 else none
        return self.table[min(len(context), self.table.shape[0] - 1), two_back, previous]


def random_lm(seed: int, vocab: int, *, positions: int = 8, scale: float = 1.5) -> TableLM:
    """A context- and position-dependent table of seeded normal logits."""
    generator = torch.Generator().manual_seed(seed)
    shape = (positions, vocab + 1, vocab + 1, vocab)
    return TableLM(scale * torch.randn(shape, generator=generator, dtype=torch.float64))


def word_lm(seed: int, *, scale: float = 2.5, noise: float = 0.0, noise_seed: int = 1) -> TableLM:
    """The coordinator tests' model over ``WORDS``: seeded logits keyed by the last two words.

    Never <unk>, <bos> or a FIM token; ``end`` is followed by a likely EOS, EOS is otherwise unlikely.
    ``noise`` perturbs the table with another seed (a drafter that partly agrees with the target of
    ``seed``). A missing word before the start reads as <bos>.
    """
    vocab = len(WORDS)
    generator = torch.Generator().manual_seed(seed)
    table = torch.randn(vocab, vocab, vocab, generator=generator, dtype=torch.float64) * scale
    if noise:
        noise_gen = torch.Generator().manual_seed(noise_seed)
        table += torch.randn(table.shape, generator=noise_gen, dtype=torch.float64) * noise
    table[..., : BOS + 1] = -math.inf  # never <unk>, <bos>
    table[..., 3:6] = -math.inf  # never FIM tokens
    table[..., EOS] = -4.0
    table[:, END, EOS] = 6.0
    full = torch.empty(1, vocab + 1, vocab + 1, vocab, dtype=torch.float64)
    full[0, :vocab, :vocab] = table
    full[0, vocab, :vocab] = table[BOS]  # no word two back: <bos>
    full[0, :, vocab] = full[0, :, BOS]  # no previous word: <bos>
    return TableLM(full)


# A rule: (suffix the context's bytes end with, None for the empty context; logits by token bytes, or by
# id for a token without text such as an end of sequence).
RuleSpec = tuple[bytes | None, Mapping[bytes | int, float]]


@dataclass(frozen=True, eq=False)
class TextLM:
    """Next-token logits over ``support`` (ascending ids of ``vocab``), chosen by the context's bytes."""

    vocab: CanonicalVocab
    support: tuple[int, ...]
    rules: tuple[tuple[bytes | None, tuple[float, ...]], ...]  # the first match wins; b"" matches all
    _rows: dict[bytes, Tensor] = field(default_factory=dict, repr=False)

    @property
    def vocab_size(self) -> int:
        return self.vocab.size

    def support_logits(self, text: bytes) -> tuple[float, ...]:
        """Logits over ``support`` after a context spelling ``text``."""
        for suffix, logits in self.rules:
            if (suffix is None and not text) or (suffix is not None and text.endswith(suffix)):
                return logits
        raise AssertionError(f"no rule matches {text!r}")

    def logits(self, context: Sequence[int]) -> Tensor:  # [vocab] float32
        text = self.vocab.bytes_of(context)
        if text not in self._rows:
            row = torch.full((self.vocab.size,), -math.inf, dtype=torch.float32)
            row[list(self.support)] = torch.tensor(self.support_logits(text), dtype=torch.float32)
            self._rows[text] = row
        return self._rows[text]


def text_lm(vocab: CanonicalVocab, rules: Sequence[RuleSpec]) -> TextLM:
    """A TextLM from rules written with token bytes (each must be a token of ``vocab``) or ids."""
    ids = {
        data: data if isinstance(data, int) else vocab.representative[data]
        for _, row in rules
        for data in row
    }
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


def token_texts(tokenizer: Any) -> list[str | None]:
    """What each id of a ``transformers`` tokenizer adds in the middle of a text (None: special)."""
    anchor = tokenizer.convert_tokens_to_ids("a")
    prefix = tokenizer.decode([anchor])
    special = set(tokenizer.all_special_ids)
    texts: list[str | None] = []
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([anchor, token_id], skip_special_tokens=False)
        texts.append(None if token_id in special else text[len(prefix) :])
    return texts


# A text the cross-vocabulary toys (``byte_level_transformers``, ``sentencepiece_transformers``) can both
# spell, for ``ReferenceLM``'s ``reference``; prompts are prefixes of it.
CODE_REFERENCE = (
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n"
    "\n\ndef add(a, b):\n    return a + b\n"
)


@dataclass
class ReferenceLM:
    """Seeded random logits plus a ``bonus`` for the longest token that continues ``reference``.

    While the context's text (decoded, special tokens skipped) is a prefix of the reference, the bonus
    goes to the longest token whose text continues it along the reference, or to EOS once the reference
    is complete. Special tokens other than EOS never come.
    """

    tokenizer: Any  # a transformers tokenizer
    seed: int
    reference: str
    bonus: float = 6.0
    noise: float = 1.0
    _next_at: list[int] = field(init=False, repr=False)
    _blocked: list[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        texts = token_texts(self.tokenizer)
        self._next_at = []
        for position in range(len(self.reference)):
            rest = self.reference[position:]
            best, best_len = -1, 0
            for token_id, text in enumerate(texts):
                if text and len(text) > best_len and rest.startswith(text):
                    best, best_len = token_id, len(text)
            self._next_at.append(best)
        self._next_at.append(self.eos)
        self._blocked = [i for i in self.tokenizer.all_special_ids if i != self.eos]

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    @property
    def support(self) -> tuple[int, ...]:
        blocked = set(self._blocked)
        return tuple(i for i in range(self.vocab_size) if i not in blocked)

    @property
    def eos(self) -> int:
        return int(self.tokenizer.eos_token_id)

    def logits(self, context: Sequence[int]) -> Tensor:  # [vocab]
        material = f"{self.seed}/{list(context[-2:])}".encode()
        seed = int.from_bytes(hashlib.blake2b(material, digest_size=8).digest(), "little")
        generator = torch.Generator().manual_seed(seed)
        logits = torch.randn(self.vocab_size, generator=generator, dtype=torch.float64) * self.noise
        logits[self._blocked] = -math.inf
        logits[self.eos] = -4.0
        text = self.tokenizer.decode(list(context), skip_special_tokens=True)
        if self.reference.startswith(text) and self._next_at[len(text)] >= 0:
            following = self._next_at[len(text)]
            logits[following] = self.bonus + (8.0 if following == self.eos else 0.0)
        return logits
