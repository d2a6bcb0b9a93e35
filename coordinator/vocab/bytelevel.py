"""The GPT-2 byte-to-unicode alphabet used by byte-level BPE vocabularies.

Byte-level BPE (GPT-2, StarCoder, SmolLM2, Qwen2, Llama-3) spells every byte as one printable character so
that token strings are valid text: printable Latin-1 bytes stand for themselves and the others are moved
to U+0100 and up in byte order ('Ġ' is the space 0x20, 'Ċ' the newline 0x0A, 'ĉ' the tab 0x09).
"""

from __future__ import annotations

import functools


@functools.cache
def byte_to_char() -> dict[int, str]:
    """The 256-entry map from a byte to the character that spells it in byte-level token strings."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 0x100)]
    mapping = {byte: chr(byte) for byte in printable}
    shifted = 0
    for byte in range(0x100):
        if byte not in mapping:
            mapping[byte] = chr(0x100 + shifted)
            shifted += 1
    return mapping


@functools.cache
def char_to_byte() -> dict[str, int]:
    """The inverse of :func:`byte_to_char`."""
    return {char: byte for byte, char in byte_to_char().items()}


@functools.cache
def _translation() -> dict[int, int]:
    """``str.translate`` table: alphabet characters to the Latin-1 character of their byte, and other
    characters below U+0100 to U+0100 (which Latin-1 cannot encode, so they fall back to UTF-8)."""
    table = {ord(char): byte for char, byte in char_to_byte().items()}
    for code in range(0x100):
        table.setdefault(code, 0x100)
    return table


def byte_level_bytes(piece: str) -> bytes:
    """The bytes a byte-level token string stands for.

    A string with a character outside the alphabet (an added token such as a chat marker written in
    plain text) stands for its own UTF-8 bytes, as the byte-level decoder of ``tokenizers`` does.
    """
    try:
        return piece.translate(_translation()).encode("latin-1")
    except UnicodeEncodeError:
        return piece.encode("utf-8")
