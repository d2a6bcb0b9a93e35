"""Two toy vocabularies and a text-following toy LM, for cross-vocabulary runs through toy services.

- ``byte_level_tokenizer``: a GPT-2-style byte-level BPE (the target's), EOS ``<|endoftext|>``.
- ``sentencepiece_tokenizer``: a Llama-2-style SentencePiece BPE (the drafter's): '▁' spaces, a
  dummy prefix, byte fallback, ``<s>`` put in front of every text, EOS ``</s>``.

Both are trained on the same small code corpus with different sizes, so their merges differ and
re-tokenization across them is not trivial. ``TextLM`` makes two models over different vocabularies
agree often: it favours the longest token that continues a reference text (while the context's text
is a prefix of it) over seeded random logits, and favours EOS once the whole reference is written.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from core.sampling import SamplingConfig, warp_probs

SPACE = "\u2581"
CORPUS = (
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a * b\n",
    "for index in range(10):\n    print(index, 'done')\n",
    "class Tree:\n    def __init__(self, left, right):\n        self.left = left\n",
)
# The text the toy models like to write; prompts are prefixes of it.
REFERENCE = (
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n"
    "\n\ndef add(a, b):\n    return a + b\n"
)


def _fast(backend: Any, **special: str) -> Any:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=backend, **special)  # type: ignore[no-untyped-call]


def byte_level_tokenizer(vocab_size: int = 330) -> Any:
    """The target's tokenizer: byte-level BPE, ``<|endoftext|>`` (id 0) ends a text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(list(CORPUS) * 4, trainer)
    return _fast(backend, eos_token="<|endoftext|>")


def sentencepiece_tokenizer(vocab_size: int = 200) -> Any:
    """The drafter's tokenizer: SentencePiece-style BPE with byte fallback; ``<s>`` starts every text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"], limit_alphabet=60, show_progress=False
    )
    backend.train_from_iterator(list(CORPUS) * 4, trainer)
    config = json.loads(backend.to_str())
    vocab: dict[str, int] = config["model"]["vocab"]
    for byte in range(256):
        vocab.setdefault(f"<0x{byte:02X}>", len(vocab))
    config["model"].update(byte_fallback=True, fuse_unk=True, unk_token="<unk>")
    backend = Tokenizer.from_str(json.dumps(config))
    backend.decoder = decoders.Sequence(
        [decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    bos = backend.token_to_id("<s>")
    backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bos)])
    return _fast(backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def token_texts(tokenizer: Any) -> list[str | None]:
    """What each id adds to a text in the middle of it (None for special tokens)."""
    anchor = tokenizer.convert_tokens_to_ids("a")
    prefix = tokenizer.decode([anchor])
    special = set(tokenizer.all_special_ids)
    texts: list[str | None] = []
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([anchor, token_id], skip_special_tokens=False)
        texts.append(None if token_id in special else text[len(prefix) :])
    return texts


@dataclass
class TextLM:
    """Seeded random logits plus a ``bonus`` for the longest token that continues ``reference``.

    While the context's text (decoded, special tokens skipped) is a prefix of the reference, the bonus
    goes to the longest token whose text continues it along the reference, or to EOS once the reference
    is complete. Special tokens other than EOS never come.
    """

    tokenizer: Any
    seed: int
    bonus: float = 6.0
    noise: float = 1.0
    reference: str = REFERENCE
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
    def eos(self) -> int:
        return int(self.tokenizer.eos_token_id)

    def logits(self, context: Sequence[int]) -> torch.Tensor:  # [vocab]
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

    def probs(self, context: Sequence[int], config: SamplingConfig) -> torch.Tensor:  # [vocab]
        return warp_probs(self.logits(context).unsqueeze(0), config)[0]
