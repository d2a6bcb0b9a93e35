"""UTF-8 tails: which bytes at the end of a draft are held back until a character completes."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.vocab.bytelevel import byte_level_bytes, byte_to_char, char_to_byte
from coordinator.vocab.utf8 import incomplete_tail_length, split_utf8, starts_inside_character

TEXT = st.lists(st.sampled_from([*"ab \n\t{}é€你好", "🎉", "👩‍💻", "\u2581", "Ġ"]), max_size=12).map("".join)


def test_incomplete_tail_examples() -> None:
    euro = "€".encode()
    assert incomplete_tail_length(b"") == 0
    assert incomplete_tail_length(b"abc") == 0
    assert incomplete_tail_length(euro) == 0
    assert incomplete_tail_length(b"a" + euro[:1]) == 1
    assert incomplete_tail_length(b"a" + euro[:2]) == 2
    assert incomplete_tail_length("🎉".encode()[:3]) == 3
    # Invalid bytes are not "incomplete": no continuation can repair them.
    assert incomplete_tail_length(b"a\x80") == 0
    assert incomplete_tail_length(b"\xc0") == 0
    assert incomplete_tail_length(b"\xed\xa0") == 0  # a surrogate's start
    assert incomplete_tail_length(b"\x80\x80\x80\x80") == 0


@settings(max_examples=150, deadline=None, derandomize=True)
@given(TEXT, st.data())
def test_cut_text_holds_back_exactly_the_partial_character(text: str, data: st.DataObject) -> None:
    encoded = text.encode()
    cut = data.draw(st.integers(0, len(encoded)))
    head = encoded[:cut]
    tail = incomplete_tail_length(head)
    # What remains decodes, and the held-back bytes begin the character the cut went through.
    assert head[: cut - tail].decode("utf-8") == text[: len(head[: cut - tail].decode("utf-8"))]
    on_boundary = any(len(text[:i].encode()) == cut for i in range(len(text) + 1))
    assert (tail == 0) == on_boundary
    split = split_utf8(head)
    assert split.invalid == b""
    assert split.text.encode() + split.held_back == head


def test_split_utf8_separates_invalid_middle_from_incomplete_tail() -> None:
    split = split_utf8(b"ok\xff\xfe!" + "€".encode()[:2])
    assert split.text == "ok"
    assert split.invalid == b"\xff\xfe!"
    assert split.held_back == "€".encode()[:2]


def test_starts_inside_character() -> None:
    assert starts_inside_character("€".encode()[1:])
    assert not starts_inside_character("€".encode())
    assert not starts_inside_character(b"")


def test_byte_level_alphabet_is_a_bijection_with_the_known_markers() -> None:
    table = byte_to_char()
    assert len(table) == 256
    assert len(set(table.values())) == 256
    assert char_to_byte() == {char: byte for byte, char in table.items()}
    assert table[ord(" ")] == "Ġ"
    assert table[ord("\n")] == "Ċ"
    assert table[ord("\t")] == "ĉ"
    assert all(table[byte] == chr(byte) for byte in range(ord("!"), ord("~") + 1))
    assert byte_level_bytes("ĠhelloĊ") == b" hello\n"
    # A string outside the alphabet (an added token written in plain text) stands for its UTF-8.
    assert byte_level_bytes("<|你好|>") == "<|你好|>".encode()
