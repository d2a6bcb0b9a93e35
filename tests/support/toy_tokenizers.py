"""The toy tokenizers of the tests: small, built in milliseconds, running the real code paths.

- Trained on a fixed corpus: one byte-level BPE (``byte_level_toy``), two SentencePiece-style
  (``sentencepiece_toy``, ``prepend_toy``): decoders, dummy prefix, byte fallback, merges that straddle a
  window's end, as in the real vocabularies. ``transformers_tokenizer`` wraps one for a toy model service
  (``transformers`` tokenizers are what the services ship to the coordinator).
- Word level: ``word_level_toy`` (the coordinator's toy services: one id per word of ``WORDS``, <bos> in
  front of every text, FIM tokens, a chat template) and ``disjoint_word_toy`` (words the byte-level toy
  has no token for).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

SPACE_MARKER = "\u2581"

CORPUS: tuple[str, ...] = (
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "hello world, hello there! the theory of the other thing is hello.",
    "for index in range(10):\n\tprint(index, 'done')\n",
    "class Tree:\n    def __init__(self, left, right):\n        self.left = left\n",
    "return the value; then return nothing else. Thus the end.",
)


def piece_id(tokenizer: Tokenizer, piece: str) -> int:
    """The id of a token string (which must exist)."""
    token_id = tokenizer.token_to_id(piece)
    assert token_id is not None, piece
    return token_id


# Code only: the coordinator's cross-vocabulary toys write code, and split it differently when trained here.
CODE_CORPUS: tuple[str, ...] = (
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "def add(a, b):\n    return a + b\n\n\ndef mul(a, b):\n    return a * b\n",
    "for index in range(10):\n    print(index, 'done')\n",
    "class Tree:\n    def __init__(self, left, right):\n        self.left = left\n",
)


def _train(
    tokenizer: Tokenizer,
    vocab_size: int,
    special_tokens: list[str],
    corpus: Sequence[str] = CORPUS,
    **options: Any,
) -> Tokenizer:
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special_tokens, show_progress=False, **options
    )
    tokenizer.train_from_iterator(list(corpus) * 4, trainer)
    return tokenizer


def byte_level_toy(
    vocab_size: int = 420, corpus: Sequence[str] = CORPUS, *, every_byte: bool = True
) -> Tokenizer:
    """A GPT-2-style byte-level BPE (special token ``<|endoftext|>``, id 0); ``every_byte=False`` leaves
    out the bytes the corpus does not use (a vocabulary that cannot spell every text)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet() if every_byte else []
    return _train(tokenizer, vocab_size, ["<|endoftext|>"], corpus, initial_alphabet=alphabet)


def _with_byte_fallback(tokenizer: Tokenizer) -> Tokenizer:
    """Appends the 256 '<0xHH>' byte tokens to a trained BPE model and turns byte fallback on."""
    config = json.loads(tokenizer.to_str())
    vocab: dict[str, int] = config["model"]["vocab"]
    for byte in range(256):
        vocab.setdefault(f"<0x{byte:02X}>", len(vocab))
    config["model"]["byte_fallback"] = True
    config["model"]["fuse_unk"] = True
    return Tokenizer.from_str(json.dumps(config))


def _sentencepiece_decoder() -> Any:
    return decoders.Sequence(
        [
            decoders.Replace(SPACE_MARKER, " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )


def sentencepiece_toy(
    vocab_size: int = 380, corpus: Sequence[str] = CORPUS, limit_alphabet: int = 70
) -> Tokenizer:
    """A Llama-2-style SentencePiece BPE: Metaspace dummy prefix ('first'), byte fallback, <unk>/<s>/</s>."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE_MARKER, prepend_scheme="first")
    tokenizer.decoder = _sentencepiece_decoder()
    trained = _train(tokenizer, vocab_size, ["<unk>", "<s>", "</s>"], corpus, limit_alphabet=limit_alphabet)
    return _with_byte_fallback(trained)


def prepend_toy() -> Tokenizer:
    """A Phi-3-style SentencePiece BPE whose normalizer always prepends '▁' and spells spaces '▁'."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Prepend(SPACE_MARKER), normalizers.Replace(" ", SPACE_MARKER)]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Split(SPACE_MARKER, behavior="merged_with_next")
    tokenizer.decoder = _sentencepiece_decoder()
    trained = _train(tokenizer, 360, ["<unk>", "<s>", "</s>"], limit_alphabet=70)
    return _with_byte_fallback(trained)


def transformers_tokenizer(tokenizer: Tokenizer, *, bos: str | None = None, **special: str) -> Any:
    """A fast ``transformers`` tokenizer over a toy (``bos``: put in front of every encoded text)."""
    from transformers import PreTrainedTokenizerFast

    if bos is not None:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", special_tokens=[(bos, piece_id(tokenizer, bos))]
        )
        special["bos_token"] = bos
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **special)  # type: ignore[no-untyped-call]


def byte_level_transformers() -> Any:
    """A byte-level toy over ``CODE_CORPUS`` as a target service ships it: ``<|endoftext|>`` ends a text."""
    return transformers_tokenizer(byte_level_toy(330, CODE_CORPUS), eos_token="<|endoftext|>")


def sentencepiece_transformers() -> Any:
    """A SentencePiece toy over ``CODE_CORPUS`` as a drafter service ships it: ``<s>`` starts a text."""
    backend = sentencepiece_toy(200, CODE_CORPUS, limit_alphabet=60)
    return transformers_tokenizer(backend, bos="<s>", eos_token="</s>", unk_token="<unk>")


WORDS = (
    "<unk>",
    "<bos>",
    "<eos>",
    "<fim_prefix>",
    "<fim_suffix>",
    "<fim_middle>",
    "user",
    "assistant",
    "system",
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "zeta",
    "eta",
    "theta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "end",
)
UNK, BOS, EOS = 0, 1, 2
END = WORDS.index("end")
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }} {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}assistant{% endif %}"
)


def word_level_toy(*, fim: bool = True, chat: bool = True, words: Sequence[str] = WORDS) -> Any:
    """A word-level fast ``transformers`` tokenizer over ``words`` that puts <bos> in front of every text."""
    from transformers import PreTrainedTokenizerFast

    vocab = {word: index for index, word in enumerate(words) if fim or not word.startswith("<fim")}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=backend, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )
    if chat:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


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


def tokenizer_files(tokenizer: Any) -> dict[str, bytes]:
    """What a model service ships of its ``transformers`` tokenizer (``save_pretrained``'s files)."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        return {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}


def fingerprint(tokenizer: Any) -> str:
    """A fingerprint of a ``transformers`` tokenizer's serialized backend."""
    canonical = json.dumps(
        json.loads(tokenizer.backend_tokenizer.to_str()), sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
