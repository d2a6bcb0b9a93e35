"""UTF-8 boundaries of byte strings: where a token's bytes may end inside a character.

A drafter or target token may end inside a multi-byte character (byte-level BPE splits rare characters
into byte tokens; SentencePiece byte-fallback tokens are single raw bytes). Text that ends inside a
character cannot be encoded by a tokenizer yet, so the end that does not form a complete character is
held back until later bytes complete it.
"""

from __future__ import annotations

from dataclasses import dataclass

# Longest UTF-8 encoding of one character.
MAX_CHAR_BYTES = 4


def _sequence_length(lead: int) -> int:
    """Bytes of the UTF-8 sequence a lead byte starts; 0 for a continuation or invalid byte."""
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0


def incomplete_tail_length(data: bytes) -> int:
    """Number of bytes at the end of ``data`` that start a character but do not yet complete it (0..3).

    Only a tail that some continuation can still complete counts: an invalid byte (a stray continuation
    byte, an impossible lead byte) is not held back, it is simply invalid.
    """
    for back in range(1, min(MAX_CHAR_BYTES, len(data)) + 1):
        byte = data[-back]
        if 0x80 <= byte <= 0xBF:
            continue
        need = _sequence_length(byte)
        if need <= back:
            return 0
        try:
            data[-back:].decode("utf-8")
        except UnicodeDecodeError as error:
            # The tail is incomplete (not invalid) when the decoder only ran out of bytes.
            return back if error.reason == "unexpected end of data" else 0
        return 0
    return 0


def starts_inside_character(data: bytes) -> bool:
    """Whether ``data`` begins with a continuation byte (it cannot start a text window)."""
    return bool(data) and 0x80 <= data[0] <= 0xBF


@dataclass(frozen=True)
class Utf8Split:
    """``data == text.encode() + invalid + held_back``.

    ``text`` is the longest valid UTF-8 prefix; ``held_back`` an incomplete final character that later
    bytes may complete; ``invalid`` the bytes from the first invalid sequence up to ``held_back`` (bytes
    no tokenizer can encode as text).
    """

    text: str
    invalid: bytes
    held_back: bytes


def split_utf8(data: bytes) -> Utf8Split:
    """Splits bytes into their valid text prefix, an invalid middle and an incomplete tail."""
    tail = incomplete_tail_length(data)
    body, held_back = data[: len(data) - tail], data[len(data) - tail :]
    try:
        return Utf8Split(body.decode("utf-8"), b"", held_back)
    except UnicodeDecodeError as error:
        return Utf8Split(body[: error.start].decode("utf-8"), body[error.start :], held_back)


def utf8_runs(data: bytes) -> list[tuple[bool, bytes]]:
    """Splits bytes into alternating runs: (True, valid UTF-8) and (False, invalid bytes).

    Each invalid run is made of maximal invalid subsequences as Python's decoder reports them; an
    incomplete final character counts as invalid here (use :func:`split_utf8` to hold it back first).
    """
    runs: list[tuple[bool, bytes]] = []
    position = 0
    while position < len(data):
        try:
            data[position:].decode("utf-8")
        except UnicodeDecodeError as error:
            if error.start:
                runs.append((True, data[position : position + error.start]))
            bad = data[position + error.start : position + error.end]
            if runs and not runs[-1][0]:
                runs[-1] = (False, runs[-1][1] + bad)
            else:
                runs.append((False, bad))
            position += error.end
        else:
            runs.append((True, data[position:]))
            break
    return runs
