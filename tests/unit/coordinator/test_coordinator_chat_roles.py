"""Chat roles checked against what the model's template renders; a template that raises is the caller's error.

Qwen2.5's template silently drops a message whose role it does not know ("wizard"): the request must be
refused naming the role and the roles the template renders. A template that raises
(``raise_exception``) is INVALID_ARGUMENT with the template's own message, never INTERNAL.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from polyspec.v1 import common_pb2, coordinator_pb2

from coordinator.pair import ModelPair, endpoint_from_info
from coordinator.prompting import PromptFormatError, encode_prompt, encode_target_prompt, template_roles
from coordinator.request import ChatInput, ChatTurn
from core.errors import InvalidArgumentError
from tests.support.toy_lm import word_lm
from tests.support.toy_service import toy_info
from tests.support.toy_tokenizers import word_level_toy
from tests.unit.coordinator.conftest import TARGET_SEED, coordinator_settings

# The role handling of Qwen2.5's chat template (its tool-call and tools branches left out).
QWEN_LIKE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    '{%- if (message.role == "user") or (message.role == "system" and not loop.first)'
    ' or (message.role == "assistant" and not message.tool_calls) %}'
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    '{%- elif message.role == "tool" %}'
    "{%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}{{- '<|im_start|>user' }}"
    "{%- endif %}"
    "{{- '\\n<tool_response>\\n' }}{{- message.content }}{{- '\\n</tool_response>' }}"
    "{%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}{{- '<|im_end|>\\n' }}{%- endif %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
# Mistral-v0.1 style: user/assistant only, strictly alternating, raising otherwise.
ALTERNATING = (
    "{%- for message in messages %}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif %}"
    "{%- if message['role'] == 'user' %}{{ 'user ' + message['content'] + ' ' }}"
    "{%- elif message['role'] == 'assistant' %}{{ 'assistant ' + message['content'] + ' ' }}"
    "{%- else %}{{ raise_exception('Only user and assistant roles are supported!') }}{%- endif %}"
    "{%- endfor %}"
)


def templated_tokenizer(template: str) -> Any:
    tokenizer = word_level_toy()
    tokenizer.chat_template = template
    return tokenizer


def endpoint(template: str, role: str = "target") -> Any:
    info = toy_info(word_lm(1), templated_tokenizer(template), model_name=f"toy-{role}")
    return endpoint_from_info(role, "127.0.0.1:1", info)


def chat(*turns: tuple[str, str]) -> ChatInput:
    return ChatInput(tuple(ChatTurn(role, content) for role, content in turns))


def test_template_roles_probes_what_a_template_renders() -> None:
    assert template_roles(templated_tokenizer(QWEN_LIKE)) == ["system", "user", "assistant", "tool"]
    assert template_roles(templated_tokenizer(ALTERNATING)) == ["user", "assistant"]


def test_a_role_the_template_drops_is_refused_naming_it() -> None:
    target = endpoint(QWEN_LIKE)
    wizard = chat(("system", "alpha"), ("wizard", "beta"), ("user", "gamma"))
    with pytest.raises(InvalidArgumentError) as info:
        encode_target_prompt(target, wizard)
    assert info.value.field == "chat.messages[1].role"
    assert "drops a message of role 'wizard'" in info.value.reason
    assert info.value.reason.endswith("the roles it renders: system, user, assistant, tool")


def test_every_message_the_template_renders_passes() -> None:
    target = endpoint(QWEN_LIKE)
    conversation = chat(("system", "alpha"), ("user", "beta"), ("assistant", "gamma"), ("tool", "delta"))
    assert encode_target_prompt(target, conversation)  # nothing dropped: encodes


def test_a_template_that_raises_is_invalid_argument_with_its_message() -> None:
    target = endpoint(ALTERNATING)
    with pytest.raises(InvalidArgumentError) as info:
        encode_target_prompt(target, chat(("user", "alpha"), ("user", "beta")))
    assert info.value.field == "chat"
    assert "refused the conversation: Conversation roles must alternate" in info.value.reason
    with pytest.raises(InvalidArgumentError, match="Only user and assistant roles are supported"):
        encode_target_prompt(target, chat(("user", "alpha"), ("system", "beta")))


def test_the_drafter_falls_back_instead_of_failing() -> None:
    """A drafter whose template refuses the chat cannot draft it; the request then runs target-only."""
    drafter = endpoint(ALTERNATING, "drafter")
    with pytest.raises(PromptFormatError, match="drafter model toy-drafter refused the conversation"):
        encode_prompt(drafter, chat(("system", "alpha"), ("user", "beta")))
    qwen_drafter = endpoint(QWEN_LIKE, "drafter")
    with pytest.raises(PromptFormatError, match="drops a message of role 'wizard'") as info:
        encode_prompt(qwen_drafter, chat(("wizard", "alpha"), ("user", "beta")))
    assert info.value.field == "chat.messages[0].role"
    pair = ModelPair(endpoint(QWEN_LIKE), qwen_drafter)
    assert pair.same_tokenizer


async def test_over_grpc_a_dropped_role_or_a_raising_template_is_invalid_argument(
    start_toy: Any, start_coord: Any, channels: Any
) -> None:
    qwen = await start_toy(word_lm(TARGET_SEED), tokenizer=templated_tokenizer(QWEN_LIKE))
    alternating = await start_toy(word_lm(TARGET_SEED), tokenizer=templated_tokenizer(ALTERNATING))
    for target, turns, expected in (
        (qwen, [("user", "alpha"), ("wizard", "beta")], "chat.messages[1].role: "),
        (alternating, [("user", "alpha"), ("user", "beta")], "chat: the chat template of target"),
    ):
        server = await start_coord(coordinator_settings(target.address))
        stub = channels(server.port)
        request = coordinator_pb2.GenerateRequest(
            chat=coordinator_pb2.Chat(
                messages=[coordinator_pb2.ChatMessage(role=role, content=content) for role, content in turns]
            ),
            max_new_tokens=2,
            sampling=common_pb2.SamplingParams(temperature=0.0),
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Generate(request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert (info.value.details() or "").startswith(expected), info.value.details()
