"""Small ``tokenizers`` tokenizers trained on a fixed corpus: one byte-level BPE, two SentencePiece-style.

They run the same code paths as the real vocabularies (decoders, dummy prefix, byte fallback, merges that
straddle a window's end) in milliseconds, so the pure tests need no model cache.
"""

from __future__ import annotations

import json
from typing import Any

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

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


def _train(tokenizer: Tokenizer, vocab_size: int, special_tokens: list[str], **options: Any) -> Tokenizer:
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special_tokens, show_progress=False, **options
    )
    tokenizer.train_from_iterator(list(CORPUS) * 4, trainer)
    return tokenizer


def byte_level_toy() -> Tokenizer:
    """A GPT-2-style byte-level BPE (special token ``<|endoftext|>``, id 0)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return _train(tokenizer, 420, ["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet())


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


def sentencepiece_toy() -> Tokenizer:
    """A Llama-2-style SentencePiece BPE: Metaspace dummy prefix ('first'), byte fallback, <unk>/<s>/</s>."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE_MARKER, prepend_scheme="first")
    tokenizer.decoder = _sentencepiece_decoder()
    trained = _train(tokenizer, 380, ["<unk>", "<s>", "</s>"], limit_alphabet=70)
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
