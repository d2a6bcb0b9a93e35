"""Text <-> token ids per model: a request's input formatted the way each model expects, and output text.

- prompt: the tokenizer's default encoding (its own BOS policy);
- chat: the model's own chat template with the generation prompt appended. A template that raises
  refuses the conversation with its own message; a template that silently drops a message (Qwen's
  drops a role it does not know, such as "wizard") refuses it too, naming the role and the roles the
  template renders. Both are INVALID_ARGUMENT for the target; the drafter then runs target-only.
- FIM: the model's own FIM tokens in PSM order (prefix token, prefix, suffix token, suffix, middle
  token), after the BOS the tokenizer adds by default. A drafter without FIM tokens drafts from the
  prefix alone; that stays lossless because the target verifies every token.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from coordinator.pair import ModelEndpoint, Tokenizer
from coordinator.request import ChatInput, FimInput, PromptInput, TextInput
from core.errors import InvalidArgumentError

REPLACEMENT_CHARACTER = "\ufffd"  # what a decoder yields for an incomplete UTF-8 sequence
# Roles the error message tests when a template drops a message (the usual ones of chat templates).
COMMON_ROLES = ("system", "user", "assistant", "tool", "developer")


class PromptFormatError(Exception):
    """A model cannot format this input: the target refuses the request, the drafter runs target-only.

    ``field`` names the request field at fault when it is narrower than the input's own field.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def _marker(index: int) -> str:
    """Content no template rewrites, distinct per message (no marker is a substring of another)."""
    return f"polyspecmessage{index}end"


def _render_chat(tokenizer: Tokenizer, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    return str(
        tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    )


def _renders_role(tokenizer: Tokenizer, role: str) -> bool:
    """Whether the template renders a message of ``role`` in one of the usual places of a conversation."""
    probe = {"role": role, "content": _marker(0)}
    user = {"role": "user", "content": "hello"}
    for messages in ([probe], [user, probe], [probe, user], [user, probe, user]):
        try:
            if _marker(0) in _render_chat(tokenizer, messages, generation_prompt=False):
                return True
        except Exception:  # this template refuses the arrangement: try the next one
            continue
    return False


def template_roles(tokenizer: Tokenizer, roles: Iterable[str] = COMMON_ROLES) -> list[str]:
    """Which of ``roles`` the tokenizer's chat template renders."""
    return [role for role in roles if _renders_role(tokenizer, role)]


def _check_nothing_dropped(endpoint: ModelEndpoint, chat: ChatInput) -> None:
    """Renders the conversation with a marker per message: a missing marker is a dropped message."""
    tokenizer = endpoint.tokenizer
    shadow = [{"role": turn.role, "content": _marker(i)} for i, turn in enumerate(chat.messages)]
    try:
        text = _render_chat(tokenizer, shadow, generation_prompt=True)
    except Exception:  # the real contents rendered; these cannot be judged: keep the rendering
        return
    for index, turn in enumerate(chat.messages):
        if _marker(index) in text:
            continue
        accepted = template_roles(tokenizer)
        where = " (here: check the message's place in the conversation)" if turn.role in accepted else ""
        renders = ", ".join(accepted) if accepted else f"none of {', '.join(COMMON_ROLES)}"
        raise PromptFormatError(
            f"the chat template of {endpoint.role} model {endpoint.model_name} drops a message of role "
            f"{turn.role!r}{where}; the roles it renders: {renders}",
            field=f"chat.messages[{index}].role",
        )


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
    try:
        text = _render_chat(tokenizer, messages, generation_prompt=True)
    except Exception as exc:  # the template's own raise_exception(...), or any failure rendering it
        raise PromptFormatError(
            f"the chat template of {endpoint.role} model {endpoint.model_name} refused the conversation: "
            f"{_template_message(exc)}"
        ) from None
    _check_nothing_dropped(endpoint, chat)
    return _encode_plain(tokenizer, text)


def _template_message(exc: BaseException) -> str:
    message: Any = getattr(exc, "message", None) or str(exc)
    return str(message) or type(exc).__name__


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
        raise InvalidArgumentError(exc.field or field, str(exc)) from None
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
