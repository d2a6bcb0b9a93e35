"""Windowed re-tokenization between two vocabularies, with text as the common currency (SLEM).

SLEM (Timor et al., ICML 2025, arXiv 2502.05202, Algorithm 2) turns drafted drafter tokens into text,
the text into target tokens, verifies those by exact match and re-syncs the drafter to the committed
text. Tokenizers are not injective (``decode(encode(s)) != s``: SentencePiece's dummy-prefix space,
normalizers, special-token strings matched inside text), and a token's encoding depends on the text
before it, so text is never re-encoded from scratch:

* **Look-behind window.** The text is encoded together with the bytes of the last few tokens already
  held (the window), starting at a known boundary: a token that begins a character and, for a
  tokenizer that adds a dummy prefix, begins with a space (so the dummy prefix re-creates it). The
  window's tokens are then stripped off by byte position, not by comparing ids.
* **Exact bytes.** Every returned token list spells exactly the requested bytes in canonical bytes
  (``canonical``): tokens the tokenizer produced are kept while their bytes agree with the text; where
  they do not (a token straddling the window's end, a normalizer rewrite, a special token matched in the
  text) the bytes are spelled by longest match over the vocabulary instead. No special token and no BOS
  is ever produced inside a window.
* **Incomplete characters.** Bytes that do not yet form a complete UTF-8 character at the end of a text
  are held back (a draft token may end inside a character); invalid bytes are dropped.

All functions are pure: token ids and bytes in, small frozen dataclasses out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from coordinator.vocab.canonical import CanonicalVocab, DummyPrefix
from coordinator.vocab.utf8 import (
    MAX_CHAR_BYTES,
    incomplete_tail_length,
    split_utf8,
    starts_inside_character,
    utf8_runs,
)

# Look-behind window of committed tokens re-encoded with new text (transformers uses 10).
DEFAULT_WINDOW_TOKENS = 8


@dataclass(frozen=True)
class EncodedText:
    """Tokens spelling ``text[:covered]`` exactly; ``natural`` when no longest-match repair was used.

    ``covered < len(text)`` only where the vocabulary cannot spell a byte (no byte tokens).
    """

    tokens: tuple[int, ...]
    covered: int
    natural: bool


def encode_after(vocab: CanonicalVocab, prefix: bytes, text: bytes) -> EncodedText:
    """Tokens for ``text`` as the tokenizer encodes it after ``prefix``, spelling ``text`` exactly.

    ``prefix + text`` must be valid UTF-8 and ``prefix`` should start at a known boundary (see the
    module docstring); the prefix's own tokens are not returned. Invariant:
    ``vocab.bytes_of(result.tokens) == text[:result.covered]``.
    """
    full = prefix + text
    if not text:
        return EncodedText((), 0, True)
    to_encode, implicit = full, b""
    if vocab.dummy_prefix is DummyPrefix.ALWAYS and full.startswith(b" "):
        to_encode = full[1:]
    elif vocab.dummy_prefix is not DummyPrefix.NONE and not full.startswith(b" "):
        implicit = b" "
    expected = implicit + full
    start = len(implicit) + len(prefix)
    tokens: list[int] = []
    natural = True
    position = 0
    for token_id in vocab.encode_plain(to_encode.decode("utf-8")):
        data = vocab.token_bytes[token_id] if 0 <= token_id < vocab.size else None
        end = position + len(data or b"")
        if not data or expected[position:end] != data:
            break
        if position >= start:
            tokens.append(token_id)
        elif end > start:
            natural = False
            repair = vocab.greedy_tokens(expected[start:end])
            if repair is None:
                return EncodedText(tuple(tokens), 0, False)
            tokens.extend(repair)
        position = end
    if position < len(expected):
        natural = False
        return _spell_rest(vocab, tokens, expected, max(position, start), start)
    return EncodedText(tuple(tokens), len(text), natural)


def _spell_rest(
    vocab: CanonicalVocab, tokens: list[int], expected: bytes, begin: int, start: int
) -> EncodedText:
    """Completes ``tokens`` by longest match from ``begin``; stops before a byte nothing can spell."""
    repair = vocab.greedy_tokens(expected[begin:])
    if repair is not None:
        return EncodedText((*tokens, *repair), len(expected) - start, False)
    for length in range(len(expected) - begin - 1, 0, -1):
        partial = vocab.greedy_tokens(expected[begin : begin + length])
        if partial is not None:
            return EncodedText((*tokens, *partial), begin + length - start, False)
    return EncodedText(tuple(tokens), begin - start, False)


def window_start(vocab: CanonicalVocab, token_ids: Sequence[int], window: int) -> int:
    """Index of the first token of the look-behind window over ``token_ids`` (``len`` if none fits).

    The window holds at most ``window`` tokens, no special token, and starts at a known boundary: a
    token that begins a character and, for a dummy-prefix tokenizer, begins with a space.
    """
    low = max(0, len(token_ids) - window)
    for index in range(len(token_ids) - 1, low - 1, -1):
        if not vocab.is_text_token(token_ids[index]):
            low = index + 1
            break
    needs_space = vocab.dummy_prefix is not DummyPrefix.NONE
    for index in range(low, len(token_ids)):
        data = vocab.token_bytes[token_ids[index]] or b""
        if data and not starts_inside_character(data) and (not needs_space or data.startswith(b" ")):
            return index
    return len(token_ids)


def _open_character_start(vocab: CanonicalVocab, token_ids: Sequence[int]) -> int:
    """Index of the token where an incomplete final character begins (``len`` if the text ends whole).

    The window must reach back to it so that the character's lead byte is encoded with its rest.
    """
    tail = incomplete_tail_length(vocab.bytes_of(token_ids[-MAX_CHAR_BYTES:]))
    index, covered = len(token_ids), 0
    while index > 0 and covered < tail:
        index -= 1
        covered += len(vocab.bytes_of(token_ids[index : index + 1]))
    while index > 0 and starts_inside_character(vocab.bytes_of(token_ids[index : index + 1])):
        index -= 1
    return index


@dataclass(frozen=True)
class Retokenized:
    """Target tokens for new text after committed tokens (:func:`retokenize_continuation`).

    Invariants: ``new_text == new_text[:consumed] + dropped + held_back`` and
    ``vocab.bytes_of(tokens) == new_text[:consumed]``, so committed tokens followed by ``tokens`` spell
    exactly the committed text followed by ``new_text[:consumed]``. ``held_back`` is an incomplete final
    character (later bytes may complete it); ``dropped`` holds bytes after an invalid UTF-8 sequence or
    that the vocabulary cannot spell. ``window_start`` indexes the committed tokens re-encoded as
    look-behind; ``natural`` is False where longest-match repair was needed.
    """

    tokens: tuple[int, ...]
    consumed: int
    held_back: bytes
    dropped: bytes
    window_start: int
    natural: bool


def retokenize_continuation(
    vocab: CanonicalVocab,
    committed: Sequence[int],
    new_text: bytes,
    window: int = DEFAULT_WINDOW_TOKENS,
) -> Retokenized:
    """Tokens of ``vocab`` that continue ``committed`` with ``new_text``, as the tokenizer would split it.

    ``committed`` tokens are final (never re-split): the returned tokens start exactly where they end,
    even when the tokenizer would merge across that point. ``committed`` may end inside a character
    that ``new_text`` completes.
    """
    start = min(window_start(vocab, committed, window), _open_character_start(vocab, committed))
    window_bytes = vocab.bytes_of(committed[start:])
    split = split_utf8(window_bytes + new_text)
    valid = split.text.encode("utf-8")
    if len(valid) < len(window_bytes):
        if not split.invalid:
            # The committed text ends inside a character that the new text does not complete yet.
            return Retokenized((), 0, new_text, b"", start, True)
        # The window is not valid text (a committed token spelled invalid bytes): encode without it.
        start, window_bytes = len(committed), b""
        split = split_utf8(new_text)
        valid = split.text.encode("utf-8")
    encoded = encode_after(vocab, valid[: len(window_bytes)], valid[len(window_bytes) :])
    consumed = encoded.covered
    rest = new_text[consumed:]
    held_back = split.held_back if len(rest) >= len(split.held_back) else b""
    dropped = rest[: len(rest) - len(held_back)]
    return Retokenized(encoded.tokens, consumed, held_back, dropped, start, encoded.natural)


@dataclass(frozen=True)
class DrafterResync:
    """How to bring a drafter's token view in line with the committed text (:func:`resync_drafter`).

    Keep the first ``keep`` generated drafter tokens (crop the drafter's cache after them), then append
    ``append``. Invariant: ``bytes_of(generated[:keep]) + bytes_of(append) + pending == committed_text``.
    ``pending`` is committed text the drafter does not see yet: an incomplete final character, or bytes
    it cannot spell; a drafted continuation must begin with it (see :func:`draft_continuation`).
    """

    keep: int
    append: tuple[int, ...]
    pending: bytes
    natural: bool

    def crop(self, generated_len: int) -> int:
        """Number of drafter tokens to crop from the end of a view of ``generated_len`` tokens."""
        return generated_len - self.keep


def resync_drafter(
    vocab: CanonicalVocab,
    generated: Sequence[int],
    committed_text: bytes,
    window: int = DEFAULT_WINDOW_TOKENS,
) -> DrafterResync:
    """Crops and extends the drafter's generated tokens so they spell the committed text.

    ``generated`` are the drafter's tokens after its prompt (including drafts not yet verified);
    ``committed_text`` the canonical bytes of the target's committed tokens after the prompt. The
    tokens that agree with the committed text are kept, except that up to ``window`` of them before the
    divergence are re-encoded with the new text so the drafter sees the tokenization its tokenizer
    would produce; drafted tokens past the divergence are cropped.
    """
    agreed, offset = _agreeing_prefix(vocab, generated, committed_text)
    if offset == len(committed_text) and incomplete_tail_length(committed_text):
        return DrafterResync(agreed, (), b"", True)  # the view already spells the partial character
    held = generated[:agreed]
    start = min(window_start(vocab, held, window), _open_character_start(vocab, held))
    start_offset = offset - len(vocab.bytes_of(generated[start:agreed]))
    rest = committed_text[start_offset:]
    spelled = spell_text(vocab, rest[: len(rest) - incomplete_tail_length(rest)])
    common = 0
    for mine, theirs in zip(spelled.tokens, generated[start:], strict=False):
        if mine != theirs:
            break
        common += 1
    pending = rest[spelled.covered :]
    return DrafterResync(start + common, spelled.tokens[common:], pending, spelled.natural)


def spell_text(vocab: CanonicalVocab, data: bytes) -> EncodedText:
    """Tokens spelling ``data`` exactly, even where it is not valid UTF-8.

    Valid runs are encoded by the tokenizer (from a known boundary: ``data`` should start at one);
    invalid bytes are spelled by longest match (byte tokens). Stops before bytes nothing can spell.
    """
    tokens: list[int] = []
    covered = 0
    natural = True
    for valid, run in utf8_runs(data):
        part = encode_after(vocab, b"", run) if valid else _spell_bytes(vocab, run)
        tokens.extend(part.tokens)
        covered += part.covered
        natural = natural and part.natural and valid
        if part.covered < len(run):
            break
    return EncodedText(tuple(tokens), covered, natural)


def _spell_bytes(vocab: CanonicalVocab, data: bytes) -> EncodedText:
    """Longest-match tokens for bytes that are not text (see :func:`encode_after`'s repair)."""
    return _spell_rest(vocab, [], data, 0, 0)


def _agreeing_prefix(vocab: CanonicalVocab, generated: Sequence[int], text: bytes) -> tuple[int, int]:
    """(tokens, bytes) of the longest prefix of ``generated`` whose bytes are a prefix of ``text``."""
    offset = 0
    for index, token_id in enumerate(generated):
        data = vocab.token_bytes[token_id] if vocab.is_text_token(token_id) else None
        if data is None or text[offset : offset + len(data)] != data:
            return index, offset
        offset += len(data)
    return len(generated), offset


def draft_continuation(pending: bytes, drafted: bytes) -> bytes | None:
    """The drafted bytes beyond the committed text, or None when the draft contradicts ``pending``.

    The drafter drafts after its view, which lacks the ``pending`` end of the committed text.
    """
    if drafted.startswith(pending):
        return drafted[len(pending) :]
    return None
