"""Text <-> token ids per model: a request's input formatted the way each model expects, and output text.

- prompt: the tokenizer's default encoding (its own BOS policy);
- chat: the model's own chat template with the generation prompt appended;
- FIM: the model's own FIM tokens in PSM order (prefix token, prefix, suffix token, suffix, middle
  token), after the BOS the tokenizer adds by default. A drafter without FIM tokens drafts from the
  prefix alone; that stays lossless because the target verifies every token.
"""

from __future__ import annotations

from collections.abc import Sequence

from coordinator.pair import ModelEndpoint, Tokenizer
from coordinator.request import ChatInput, FimInput, PromptInput, TextInput
from core.errors import InvalidArgumentError

REPLACEMENT_CHARACTER = "\ufffd"  # what a decoder yields for an incomplete UTF-8 sequence


class PromptFormatError(Exception):
    """The drafter cannot format this input (the request then runs target-only)."""


def input_field(prompt: PromptInput) -> str:
    """The request field that carries this input (for error messages)."""
    if isinstance(prompt, TextInput):
        return "prompt"
    return "chat" if isinstance(prompt, ChatInput) else "fim"


def _encode_plain(tokenizer: Tokenizer, text: str) -> list[int]:
    return [int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]


def _default_bos(tokenizer: Tokenizer) -> list[int]:
    """The BOS the tokenizer puts in front of a text by default ([] when it adds none)."""
    bos = tokenizer.bos_token_id
    if bos is None:
        return []
    ids = tokenizer("", add_special_tokens=True)["input_ids"]
    return [int(bos)] if ids and ids[0] == bos else []


def _encode_chat(endpoint: ModelEndpoint, chat: ChatInput) -> list[int]:
    tokenizer = endpoint.tokenizer
    if not getattr(tokenizer, "chat_template", None):
        raise PromptFormatError(f"{endpoint.role} model {endpoint.model_name} has no chat template")
    messages = [{"role": turn.role, "content": turn.content} for turn in chat.messages]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return _encode_plain(tokenizer, str(text))


def _encode_fim(endpoint: ModelEndpoint, fim: FimInput) -> list[int]:
    tokenizer = endpoint.tokenizer
    if endpoint.fim is None:
        return [int(i) for i in tokenizer(fim.prefix)["input_ids"]]
    return [
        *_default_bos(tokenizer),
        endpoint.fim.prefix,
        *_encode_plain(tokenizer, fim.prefix),
        endpoint.fim.suffix,
        *_encode_plain(tokenizer, fim.suffix),
        endpoint.fim.middle,
    ]


def encode_prompt(endpoint: ModelEndpoint, prompt: PromptInput) -> list[int]:
    """Token ids of ``prompt`` for one model.

    Raises ``PromptFormatError`` when the model cannot take this kind of input (no chat template);
    FIM without FIM tokens falls back to the prefix alone (callers decide whether that is allowed).
    """
    if isinstance(prompt, TextInput):
        return [int(i) for i in endpoint.tokenizer(prompt.text)["input_ids"]]
    if isinstance(prompt, ChatInput):
        return _encode_chat(endpoint, prompt)
    return _encode_fim(endpoint, prompt)


def encode_target_prompt(target: ModelEndpoint, prompt: PromptInput) -> list[int]:
    """The target's prompt ids; refuses inputs the target cannot take or that leave no room to generate."""
    field = input_field(prompt)
    if isinstance(prompt, FimInput) and target.fim is None:
        raise InvalidArgumentError(
            "fim", f"the target model {target.model_name} has no fill-in-the-middle tokens"
        )
    try:
        ids = encode_prompt(target, prompt)
    except PromptFormatError as exc:
        raise InvalidArgumentError(field, str(exc)) from None
    if not ids:
        raise InvalidArgumentError(field, "encodes to no tokens")
    if len(ids) >= target.max_context_tokens:
        raise InvalidArgumentError(
            field,
            f"is {len(ids)} tokens long; the target's context window is {target.max_context_tokens} "
            "tokens and must leave room for at least one new token",
        )
    return ids


class IncrementalDetokenizer:
    """Turns output tokens into text deltas as they arrive, holding back an incomplete UTF-8 tail.

    Each delta is decoded within a window that starts at the previous delta's tokens, so tokenizers
    whose decoding depends on the neighbouring token (SentencePiece spaces, byte fallback) come out
    as in a whole-text decode; ``finish`` flushes what is held back and reconciles with that decode.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._ids: list[int] = []
        self._prefix_offset = 0  # start of the decode window
        self._read_offset = 0  # tokens already turned into emitted text
        self._emitted: list[str] = []

    def _decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=False))

    def add(self, token_ids: Sequence[int]) -> str:
        """The new text the tokens complete ("" while a character is still incomplete)."""
        self._ids.extend(token_ids)
        before = self._decode(self._ids[self._prefix_offset : self._read_offset])
        after = self._decode(self._ids[self._prefix_offset :])
        if len(after) <= len(before) or after.endswith(REPLACEMENT_CHARACTER):
            return ""
        delta = after[len(before) :]
        self._prefix_offset, self._read_offset = self._read_offset, len(self._ids)
        self._emitted.append(delta)
        return delta

    def finish(self) -> str:
        """The rest of the text once no more tokens come (including a held-back tail)."""
        full = self._decode(self._ids)
        emitted = "".join(self._emitted)
        rest = full[len(emitted) :] if full.startswith(emitted) else ""
        self._emitted.append(rest)
        return rest


def decode_output(tokenizer: Tokenizer, token_ids: Sequence[int]) -> str:
    """The whole text of output tokens (special tokens kept, as in the stream)."""
    return str(tokenizer.decode(list(token_ids), skip_special_tokens=False))


def text_token_ids(token_ids: Sequence[int], eos_token_ids: frozenset[int], ignore_eos: bool) -> list[int]:
    """The output tokens that make up the text: all but an EOS that ended the generation."""
    if ignore_eos or not token_ids or token_ids[-1] not in eos_token_ids:
        return list(token_ids)
    return list(token_ids[:-1])
