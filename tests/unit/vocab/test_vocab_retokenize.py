"""Windowed re-tokenization and drafter re-sync on toy tokenizers (properties hold for any text)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.vocab.canonical import CanonicalVocab
from coordinator.vocab.retokenize import (
    DEFAULT_WINDOW_TOKENS,
    DrafterResync,
    draft_continuation,
    encode_after,
    resync_drafter,
    retokenize_continuation,
    window_start,
)
from coordinator.vocab.utf8 import incomplete_tail_length
from tests.unit.vocab.conftest import NamedVocabs

NAMES = ["byte_level", "sentencepiece", "prepend"]
TEXT = st.lists(
    st.sampled_from([*"helo wrdtn()\n:_.", "  ", "    ", "\t", "the", " hello", "日本", "🎉", "é", "\u2581"]),
    min_size=1,
    max_size=14,
).map("".join)


def natural_tokens(vocab: CanonicalVocab, text: str) -> list[int]:
    """What the tokenizer makes of a whole text (no special tokens)."""
    return vocab.encode_plain(text)


def assert_retokenized(vocab: CanonicalVocab, committed: list[int], new_text: bytes, window: int) -> None:
    result = retokenize_continuation(vocab, committed, new_text, window=window)
    consumed = new_text[: result.consumed]
    assert new_text == consumed + result.dropped + result.held_back
    assert vocab.bytes_of(result.tokens) == consumed
    assert all(vocab.is_text_token(t) for t in result.tokens)
    assert 0 <= result.window_start <= len(committed)
    if incomplete_tail_length(vocab.bytes_of(committed)) == 0:
        assert len(committed) - result.window_start <= window  # else it reaches back to the lead byte
    combined = vocab.bytes_of(committed) + new_text
    assert len(result.held_back) == incomplete_tail_length(combined) or result.consumed == 0
    assert result.dropped == b""  # drafts of valid text are never dropped


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=50, deadline=None, derandomize=True)
@given(text=TEXT, data=st.data())
def test_retokenized_tokens_spell_exactly_the_new_text(
    toy_vocabs: NamedVocabs, name: str, text: str, data: st.DataObject
) -> None:
    vocab = toy_vocabs[name]
    ids = natural_tokens(vocab, text)
    full = vocab.bytes_of(ids)
    split = data.draw(st.integers(0, len(ids)), label="committed tokens")
    committed = ids[:split]
    rest = full[len(vocab.bytes_of(committed)) :]
    cut = data.draw(st.integers(0, len(rest)), label="draft bytes")
    window = data.draw(st.sampled_from([0, 1, 3, DEFAULT_WINDOW_TOKENS]), label="window")
    assert_retokenized(vocab, committed, rest[:cut], window)
    whole = retokenize_continuation(vocab, committed, rest, window=window)
    assert whole.consumed == len(rest)
    assert vocab.decode_text(committed + list(whole.tokens)) == vocab.decode_text(ids)


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=40, deadline=None, derandomize=True)
@given(text=TEXT, data=st.data())
def test_committed_tokens_may_end_anywhere_even_inside_a_character(
    toy_vocabs: NamedVocabs, name: str, text: str, data: st.DataObject
) -> None:
    vocab = toy_vocabs[name]
    full = vocab.bytes_of(natural_tokens(vocab, text))
    cut = data.draw(st.integers(0, len(full)), label="committed bytes")
    committed = vocab.greedy_tokens(full[:cut])  # an unnatural split, possibly inside a character
    assert committed is not None
    assert_retokenized(vocab, committed, full[cut:], DEFAULT_WINDOW_TOKENS)


@pytest.mark.parametrize("name", NAMES)
def test_an_incomplete_character_is_held_back_then_completed(toy_vocabs: NamedVocabs, name: str) -> None:
    vocab = toy_vocabs[name]
    committed = natural_tokens(vocab, " hello")
    emoji = "🎉".encode()
    partial = retokenize_continuation(vocab, committed, b" world " + emoji[:2])
    assert partial.held_back == emoji[:2]
    assert vocab.bytes_of(partial.tokens) == b" world "
    completed = retokenize_continuation(vocab, committed, b" world " + emoji)
    assert completed.held_back == b""
    assert vocab.bytes_of(completed.tokens) == b" world " + emoji
    only_partial = retokenize_continuation(vocab, committed, emoji[:3])
    assert (only_partial.tokens, only_partial.held_back) == ((), emoji[:3])


def test_committed_text_ending_inside_a_character_is_continued(toy_vocabs: NamedVocabs) -> None:
    vocab = toy_vocabs["byte_level"]
    ids = natural_tokens(vocab, "x日本")
    committed = ids[:2]  # 'x' and the first byte of 日
    assert vocab.bytes_of(committed) == b"x\xe6"
    waiting = retokenize_continuation(vocab, committed, b"\x97")
    assert (waiting.tokens, waiting.held_back) == ((), b"\x97")
    done = retokenize_continuation(vocab, committed, "日本".encode()[1:])
    assert vocab.bytes_of(committed + list(done.tokens)) == "x日本".encode()


def test_no_special_token_is_produced_inside_a_window(toy_vocabs: NamedVocabs) -> None:
    vocab = toy_vocabs["byte_level"]
    committed = natural_tokens(vocab, "hello")
    result = retokenize_continuation(vocab, committed, b" <|endoftext|> the")
    assert 0 not in result.tokens  # the special id of '<|endoftext|>'
    assert vocab.bytes_of(result.tokens) == b" <|endoftext|> the"
    assert not result.natural
    # A special token among the committed tokens bounds the window.
    with_special = [*committed, 0, *natural_tokens(vocab, " the")]
    assert window_start(vocab, with_special, DEFAULT_WINDOW_TOKENS) == len(committed) + 1


def test_window_starts_at_a_space_for_dummy_prefix_tokenizers(toy_vocabs: NamedVocabs) -> None:
    vocab = toy_vocabs["sentencepiece"]
    ids = natural_tokens(vocab, "hello world")  # '▁hello', '▁wor', 'l', 'd'
    starts = [window_start(vocab, ids, window) for window in range(5)]
    assert starts == [4, 4, 4, 1, 0]
    result = retokenize_continuation(vocab, ids[:2], b"ld the")
    assert vocab.bytes_of(result.tokens) == b"ld the"
    whole = retokenize_continuation(vocab, ids[:1], b" world")
    assert list(whole.tokens) == ids[1:]
    assert whole.natural


def test_a_token_straddling_the_committed_end_is_respelled(toy_vocabs: NamedVocabs) -> None:
    vocab = toy_vocabs["byte_level"]
    committed = natural_tokens(vocab, " hel")
    result = retokenize_continuation(vocab, committed, b"lo world")
    assert vocab.bytes_of(result.tokens) == b"lo world"
    assert not result.natural
    tail = encode_after(vocab, b" hel", b"lo world")
    assert tail.tokens == result.tokens


def test_invalid_bytes_in_a_draft_are_dropped(toy_vocabs: NamedVocabs) -> None:
    vocab = toy_vocabs["byte_level"]
    result = retokenize_continuation(vocab, natural_tokens(vocab, "hello"), b" the\xff\xfe end")
    assert vocab.bytes_of(result.tokens) == b" the"
    assert (result.dropped, result.held_back) == (b"\xff\xfe end", b"")


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=50, deadline=None, derandomize=True)
@given(text=TEXT, data=st.data())
def test_resync_keeps_what_agrees_and_spells_the_committed_text(
    toy_vocabs: NamedVocabs, name: str, text: str, data: st.DataObject
) -> None:
    vocab = toy_vocabs[name]
    ids = natural_tokens(vocab, text)
    full = vocab.bytes_of(ids)
    view = ids[: data.draw(st.integers(0, len(ids)), label="drafter view")]
    committed = full[: data.draw(st.integers(0, len(full)), label="committed bytes")]
    committed += data.draw(st.sampled_from([b"", b"x", b" other", "好".encode()[:2]]), label="divergence")
    window = data.draw(st.sampled_from([0, 2, DEFAULT_WINDOW_TOKENS]), label="window")
    resync = resync_drafter(vocab, view, committed, window=window)
    assert vocab.bytes_of(view[: resync.keep]) + vocab.bytes_of(resync.append) + resync.pending == committed
    assert resync.crop(len(view)) == len(view) - resync.keep >= 0
    assert resync.pending in (b"", committed[len(committed) - incomplete_tail_length(committed) :])
    assert all(vocab.is_text_token(t) for t in resync.append)
    agreed = next((k for k in range(len(view), -1, -1) if committed.startswith(vocab.bytes_of(view[:k]))), 0)
    if incomplete_tail_length(vocab.bytes_of(view[:agreed])) == 0:
        assert resync.keep >= agreed - window  # only the look-behind window is re-encoded


def test_resync_crops_rejected_drafts_and_re_encodes_the_window(toy_vocabs: NamedVocabs) -> None:
    vocab = toy_vocabs["byte_level"]
    text = "def fibonacci(n):\n    return"
    view = natural_tokens(vocab, text)
    assert resync_drafter(vocab, view, text.encode()) == DrafterResync(len(view), (), b"", True)
    view = natural_tokens(vocab, "def fibonacci(n):\n    return")
    committed = vocab.bytes_of(natural_tokens(vocab, "def fibonacci(n):\n    if"))
    resync = resync_drafter(vocab, view, committed)
    assert vocab.bytes_of(view[: resync.keep] + list(resync.append)) == committed
    assert view[: resync.keep] + list(resync.append) == natural_tokens(vocab, "def fibonacci(n):\n    if")
    # An unnatural split in the view is re-encoded the way the tokenizer splits the text.
    unnatural = [*natural_tokens(vocab, "def hel"), *natural_tokens(vocab, "lo")]
    resync = resync_drafter(vocab, unnatural, b"def hello")
    assert unnatural[: resync.keep] + list(resync.append) == natural_tokens(vocab, "def hello")


def test_resync_spells_invalid_committed_bytes_and_goes_on(toy_vocabs: NamedVocabs) -> None:
    for name in NAMES:
        vocab = toy_vocabs[name]
        committed = b" hello \xe6x world \xff\xfe end " + "好".encode()[:1]
        resync = resync_drafter(vocab, [], committed)
        assert vocab.bytes_of(resync.append) == committed[:-1]
        assert resync.pending == committed[-1:]
        assert not resync.natural


def test_draft_continuation_respects_pending_bytes() -> None:
    assert draft_continuation(b"", b"abc") == b"abc"
    assert draft_continuation(b"\xe5\xa5", "好的".encode()) == "好的".encode()[2:]
    assert draft_continuation(b"\xe5\xa5", b"no") is None


def test_invalid_committed_bytes_are_left_out_of_the_window(toy_vocabs: NamedVocabs) -> None:
    vocab = toy_vocabs["byte_level"]
    committed = vocab.greedy_tokens(b"hello \xff\xe6")  # ends with an invalid byte and a lead byte
    assert committed is not None
    result = retokenize_continuation(vocab, committed, b" world")
    assert result.window_start == len(committed)
    assert vocab.bytes_of(result.tokens) == b" world"
    orphan = retokenize_continuation(vocab, committed, b"\x97\xa5 x")  # completes nothing it can see
    assert (orphan.tokens, orphan.dropped) == ((), b"\x97\xa5 x")
