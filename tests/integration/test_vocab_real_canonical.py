"""Canonical token bytes of real vocabularies: schemes, round trips, every token against its decoder."""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

import pytest
from hypothesis import given, settings

from coordinator.vocab.canonical import CanonicalVocab, DecodeScheme, DummyPrefix, TokenKind
from coordinator.vocab.intersection import TokenDecodes
from tests.fixtures.vocabs import ALL_VOCABS
from tests.integration.vocab_texts import TEXT

pytestmark = pytest.mark.real_model

BL, SP = DecodeScheme.BYTE_LEVEL, DecodeScheme.SENTENCEPIECE
# name -> (ids, scheme, dummy prefix, leading spaces the decoder strips)
EXPECTED: dict[str, tuple[int, DecodeScheme, DummyPrefix, int]] = {
    "smollm2": (49152, BL, DummyPrefix.NONE, 0),
    "qwen2.5": (151936, BL, DummyPrefix.NONE, 0),
    "gemma-3": (262144, SP, DummyPrefix.NONE, 0),
    "gpt2": (50257, BL, DummyPrefix.NONE, 0),
    "llama-spm": (32000, SP, DummyPrefix.IF_MISSING, 1),
    "llama-bpe": (128257, BL, DummyPrefix.NONE, 0),
    "qwen2": (151936, BL, DummyPrefix.NONE, 0),
    "starcoder": (49152, BL, DummyPrefix.NONE, 0),
    "phi-3": (32064, SP, DummyPrefix.ALWAYS, 1),
    "deepseek-coder": (32259, BL, DummyPrefix.NONE, 0),
}


def expected_encoded_bytes(vocab: CanonicalVocab, text: str) -> bytes:
    """The canonical bytes ``encode(text)`` spells: the text (NFC-composed by an NFC normalizer), plus a
    dummy-prefix space where one is added."""
    if type(vocab.tokenizer.normalizer).__name__ == "NFC":
        text = unicodedata.normalize("NFC", text)
    data = text.encode()
    if vocab.dummy_prefix is DummyPrefix.ALWAYS or (
        vocab.dummy_prefix is DummyPrefix.IF_MISSING and not data.startswith(b" ")
    ):
        return b" " + data
    return data


@pytest.mark.parametrize("name", ALL_VOCABS)
def test_scheme_size_and_dummy_prefix_match_how_the_tokenizer_encodes(
    canonical_vocab: Callable[[str], CanonicalVocab], name: str
) -> None:
    vocab = canonical_vocab(name)
    assert (vocab.size, vocab.scheme, vocab.dummy_prefix, vocab.leading_strip) == EXPECTED[name]
    # Probe the encoder: a dummy prefix shows up as a leading space in the canonical bytes.
    assert vocab.bytes_of(vocab.encode_plain("a")) == expected_encoded_bytes(vocab, "a")
    assert vocab.bytes_of(vocab.encode_plain(" a")) == expected_encoded_bytes(vocab, " a")
    assert vocab.decode_text(vocab.encode_plain("a")) == "a"
    assert all(vocab.token_bytes[i] is None for i in range(vocab.size) if vocab.kinds[i] == TokenKind.SPECIAL)
    if name in ("llama-spm", "phi-3", "gemma-3"):
        newline = vocab.tokenizer.token_to_id("<0x0A>")
        assert (vocab.kind(newline), vocab.token_bytes[newline]) == (TokenKind.BYTE, b"\n")
    else:
        assert vocab.token_bytes[vocab.tokenizer.token_to_id("Ġ")] == b" "
        assert vocab.token_bytes[vocab.tokenizer.token_to_id("Ċ")] == b"\n"


@pytest.mark.parametrize("name", ALL_VOCABS)
@settings(max_examples=25, deadline=None, derandomize=True)
@given(text=TEXT)
def test_encoded_text_round_trips_through_canonical_bytes(
    canonical_vocab: Callable[[str], CanonicalVocab], name: str, text: str
) -> None:
    vocab = canonical_vocab(name)
    ids = vocab.encode_plain(text)
    assert vocab.bytes_of(ids) == expected_encoded_bytes(vocab, text)
    assert all(vocab.is_text_token(i) for i in ids)
    data = vocab.bytes_of(ids)
    spaces = min(vocab.leading_strip, len(data) - len(data.lstrip(b" ")))
    assert vocab.decode_text(ids) == data[spaces:].decode()


@pytest.mark.parametrize("name", ALL_VOCABS)
def test_every_token_decodes_like_its_canonical_bytes(
    canonical_vocab: Callable[[str], CanonicalVocab],
    vocab_decodes: Callable[[str], TokenDecodes],
    name: str,
) -> None:
    vocab, decodes = canonical_vocab(name), vocab_decodes(name)
    wrong: list[int] = []
    fragments = 0
    for token_id, text in decodes.in_context.items():
        data = vocab.token_bytes[token_id] or b""
        try:
            expected = data.decode("utf-8")
        except UnicodeDecodeError:
            fragments += 1
            expected = data.decode("utf-8", errors="replace")
        if text != expected or decodes.alone[token_id] not in (expected, None):
            wrong.append(token_id)
    assert not wrong, [(i, vocab.tokenizer.id_to_token(i), vocab.token_bytes[i]) for i in wrong[:10]]
    assert len(decodes.in_context) == sum(1 for i in range(vocab.size) if vocab.is_text_token(i))
    if vocab.scheme is DecodeScheme.SENTENCEPIECE:
        assert fragments == 128  # the byte-fallback tokens <0x80>..<0xFF>
