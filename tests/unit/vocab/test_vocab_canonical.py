"""Canonical token bytes on toy tokenizers: schemes, kinds, round trips, longest-match spelling."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import AddedToken, Tokenizer, decoders, models

from coordinator.vocab.canonical import CanonicalVocab, DecodeScheme, DummyPrefix, TokenKind
from core.errors import InvalidArgumentError
from tests.unit.vocab.conftest import NamedVocabs

TEXT = st.lists(
    st.sampled_from([*"helo wrdtn()\n\t:_.", "  ", "    ", "日本", "🎉", "é", "\u2581", "<|endoftext|>"]),
    max_size=12,
).map("".join)


def expected_encoded_bytes(vocab: CanonicalVocab, text: str) -> bytes:
    """The canonical bytes ``encode(text)`` must spell: the text, plus the dummy-prefix space if added."""
    data = text.encode()
    if not data or vocab.dummy_prefix is DummyPrefix.NONE:
        return data
    if vocab.dummy_prefix is DummyPrefix.ALWAYS or not data.startswith(b" "):
        return b" " + data
    return data


def stripped_text(vocab: CanonicalVocab, data: bytes) -> str:
    """What a decoder makes of canonical bytes at the start of a text."""
    spaces = min(vocab.leading_strip, len(data) - len(data.lstrip(b" ")))
    return data[spaces:].decode("utf-8", errors="replace")


def test_schemes_and_dummy_prefixes_are_read_from_the_tokenizer(toy_vocabs: NamedVocabs) -> None:
    byte_level, sentencepiece, prepend = (
        toy_vocabs["byte_level"],
        toy_vocabs["sentencepiece"],
        toy_vocabs["prepend"],
    )
    assert (byte_level.scheme, byte_level.dummy_prefix, byte_level.leading_strip) == (
        DecodeScheme.BYTE_LEVEL,
        DummyPrefix.NONE,
        0,
    )
    assert (sentencepiece.scheme, sentencepiece.dummy_prefix, sentencepiece.leading_strip) == (
        DecodeScheme.SENTENCEPIECE,
        DummyPrefix.IF_MISSING,
        1,
    )
    assert (prepend.scheme, prepend.dummy_prefix) == (DecodeScheme.SENTENCEPIECE, DummyPrefix.ALWAYS)


def test_token_kinds_and_bytes(toy_tokenizers: dict[str, Any], toy_vocabs: NamedVocabs) -> None:
    byte_level = toy_vocabs["byte_level"]
    assert byte_level.kinds[0] == TokenKind.SPECIAL
    assert byte_level.token_bytes[0] is None
    assert not byte_level.is_text_token(0)
    hello = toy_tokenizers["byte_level"].token_to_id("Ġhello")
    assert byte_level.token_bytes[hello] == b" hello"
    sentencepiece = toy_vocabs["sentencepiece"]
    newline = toy_tokenizers["sentencepiece"].token_to_id("<0x0A>")
    assert sentencepiece.kinds[newline] == TokenKind.BYTE
    assert sentencepiece.token_bytes[newline] == b"\n"
    lead = toy_tokenizers["sentencepiece"].token_to_id("<0xE6>")
    assert sentencepiece.token_bytes[lead] == b"\xe6"  # an incomplete UTF-8 fragment, kept as bytes
    marker = toy_tokenizers["sentencepiece"].token_to_id("▁hello")
    assert sentencepiece.token_bytes[marker] == b" hello"
    assert sentencepiece.kinds[marker] == TokenKind.NORMAL
    assert {sentencepiece.kinds[i] for i in range(3)} == {TokenKind.SPECIAL}


@pytest.mark.parametrize("name", ["byte_level", "sentencepiece", "prepend"])
@settings(max_examples=60, deadline=None, derandomize=True)
@given(text=TEXT)
def test_encoded_ids_spell_the_text_and_decode_like_their_bytes(
    toy_vocabs: NamedVocabs, name: str, text: str
) -> None:
    vocab = toy_vocabs[name]
    ids = vocab.tokenizer.encode(text, add_special_tokens=False).ids
    text_ids = [i for i in ids if vocab.is_text_token(i)]
    # Not injective: a literal '▁' is a space to SentencePiece; a special token's text is not text.
    literal_marker = "\u2581" in text and vocab.scheme is DecodeScheme.SENTENCEPIECE
    if not literal_marker and not ("<|endoftext|>" in text and name == "byte_level"):
        assert vocab.bytes_of(ids) == expected_encoded_bytes(vocab, text)
    assert vocab.decode_text(ids) == stripped_text(vocab, vocab.bytes_of(text_ids))


def test_added_tokens_decode_to_their_content_and_special_ones_to_nothing() -> None:
    from tests.support.toy_tokenizers import byte_level_toy, piece_id

    tokenizer = byte_level_toy()
    tokenizer.add_tokens([AddedToken("<tool_call>", special=False), AddedToken("\n\n\n", special=False)])
    tokenizer.add_special_tokens([AddedToken("<|im_end|>", special=True)])
    vocab = CanonicalVocab.from_tokenizer(tokenizer)
    tool, blank, end = (piece_id(tokenizer, t) for t in ("<tool_call>", "\n\n\n", "<|im_end|>"))
    assert (vocab.kind(tool), vocab.token_bytes[tool]) == (TokenKind.ADDED, b"<tool_call>")
    assert vocab.token_bytes[blank] == b"\n\n\n"
    assert (vocab.kind(end), vocab.token_bytes[end]) == (TokenKind.SPECIAL, None)
    assert vocab.decode_text([tool, blank, end]) == "<tool_call>\n\n\n"
    forced = CanonicalVocab.from_tokenizer(tokenizer, special_ids=[tool])
    assert forced.kind(tool) == TokenKind.SPECIAL


def test_representative_prefers_what_the_tokenizer_produces(
    toy_tokenizers: dict[str, Any], toy_vocabs: NamedVocabs
) -> None:
    tokenizer, vocab = toy_tokenizers["sentencepiece"], toy_vocabs["sentencepiece"]
    letter, byte = tokenizer.token_to_id("a"), tokenizer.token_to_id("<0x61>")
    assert vocab.token_bytes[letter] == vocab.token_bytes[byte] == b"a"
    assert vocab.representative[b"a"] == letter
    assert vocab.representative[b"\xe6"] == tokenizer.token_to_id("<0xE6>")


@pytest.mark.parametrize("name", ["byte_level", "sentencepiece", "prepend"])
def test_greedy_tokens_spell_any_bytes_exactly(toy_vocabs: NamedVocabs, name: str) -> None:
    vocab = toy_vocabs[name]
    for data in (b"hello world", b"\xff\x00 \xe6\x97", "日本🎉".encode(), b""):
        tokens = vocab.greedy_tokens(data)
        assert tokens is not None
        assert vocab.bytes_of(tokens) == data


def _tiny_sentencepiece(vocab: dict[str, int]) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tokenizer.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.Fuse()])
    return tokenizer


def test_greedy_tokens_report_bytes_no_token_spells() -> None:
    vocab = CanonicalVocab.from_tokenizer(_tiny_sentencepiece({"\u2581": 0, "a": 1, "b": 2}))
    assert vocab.greedy_tokens(b" ab") == [0, 1, 2]
    assert vocab.greedy_tokens(b"abc") is None


@pytest.mark.parametrize(
    "decoder",
    [decoders.WordPiece(), decoders.BPEDecoder(), None, decoders.Replace("x", "y")],
    ids=["wordpiece", "bpe-suffix", "none", "no-space-marker"],
)
def test_unsupported_decoders_are_refused(decoder: Any) -> None:
    tokenizer = _tiny_sentencepiece({"a": 0})
    tokenizer.decoder = decoder
    with pytest.raises(InvalidArgumentError, match="tokenizer"):
        CanonicalVocab.from_tokenizer(tokenizer)


def test_transformers_tokenizers_are_accepted(toy_tokenizers: dict[str, Any]) -> None:
    from transformers import PreTrainedTokenizerFast

    wrapped = PreTrainedTokenizerFast(tokenizer_object=toy_tokenizers["byte_level"])  # type: ignore[no-untyped-call]
    vocab = CanonicalVocab.from_tokenizer(wrapped)
    assert vocab.size == toy_tokenizers["byte_level"].get_vocab_size()
    with pytest.raises(InvalidArgumentError):
        CanonicalVocab.from_tokenizer(object())


def test_regex_replace_decoder_is_refused() -> None:
    tokenizer = _tiny_sentencepiece({"a": 0})
    config = json.loads(tokenizer.to_str())
    config["decoder"] = {"type": "Replace", "pattern": {"Regex": "\u2581"}, "content": " "}
    with pytest.raises(InvalidArgumentError, match="regex"):
        CanonicalVocab.from_tokenizer(Tokenizer.from_str(json.dumps(config)))
