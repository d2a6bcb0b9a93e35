"""Endpoints from Info, prompt formatting per model, and incremental detokenization."""

from __future__ import annotations

from typing import Any

import pytest

from coordinator.pair import (
    ModelPair,
    PairMismatchError,
    build_tokenizer,
    check_declared_fingerprint,
    endpoint_from_info,
)
from coordinator.prompting import (
    IncrementalDetokenizer,
    PromptFormatError,
    decode_output,
    encode_prompt,
    encode_target_prompt,
    text_token_ids,
)
from coordinator.request import ChatInput, ChatTurn, FimInput, TextInput
from core.errors import InvalidArgumentError
from tests.support.toy_lm import word_lm
from tests.support.toy_service import toy_info
from tests.support.toy_tokenizers import BOS, EOS, word_level_toy


def endpoint(tokenizer: Any, role: str = "target", **kwargs: Any) -> Any:
    return endpoint_from_info(
        role, "127.0.0.1:1", toy_info(word_lm(1), tokenizer, model_name=f"toy-{role}", **kwargs)
    )


@pytest.fixture(scope="module")
def toy_endpoint() -> Any:
    return endpoint(word_level_toy())


def ids(tokenizer: Any, text: str) -> list[int]:
    return [int(i) for i in tokenizer(text, add_special_tokens=False)["input_ids"]]


def test_endpoint_from_info(toy_endpoint: Any) -> None:
    tokenizer = toy_endpoint.tokenizer
    assert toy_endpoint.eos_token_ids == frozenset({EOS})
    assert toy_endpoint.fim is not None
    assert toy_endpoint.fim.prefix == tokenizer.convert_tokens_to_ids("<fim_prefix>")
    assert toy_endpoint.max_context_tokens == 512
    assert tokenizer("alpha beta")["input_ids"] == [BOS, *ids(tokenizer, "alpha beta")]


def test_same_tokenizer_is_fingerprint_equality(toy_endpoint: Any) -> None:
    same = endpoint(word_level_toy(), "drafter")
    other = endpoint(word_level_toy(fim=False), "drafter")
    assert ModelPair(toy_endpoint, same).same_tokenizer
    assert not ModelPair(toy_endpoint, other).same_tokenizer
    assert not ModelPair(toy_endpoint, None).same_tokenizer


def test_declared_fingerprint_must_match(toy_endpoint: Any) -> None:
    check_declared_fingerprint(toy_endpoint, None)
    check_declared_fingerprint(toy_endpoint, toy_endpoint.fingerprint.upper())
    with pytest.raises(PairMismatchError, match="declares"):
        check_declared_fingerprint(toy_endpoint, "0" * 64)


@pytest.mark.parametrize("name", ["../evil.json", "/abs.json", ""])
def test_unsafe_tokenizer_file_names_are_refused(name: str) -> None:
    with pytest.raises(PairMismatchError, match="unsafe"):
        build_tokenizer({name: b"{}"})


def test_prompt_uses_the_tokenizers_default(toy_endpoint: Any) -> None:
    tokenizer = toy_endpoint.tokenizer
    assert encode_prompt(toy_endpoint, TextInput("alpha  beta")) == [BOS, *ids(tokenizer, "alpha beta")]


def test_chat_uses_the_models_template(toy_endpoint: Any) -> None:
    chat = ChatInput((ChatTurn("system", "alpha"), ChatTurn("user", "beta gamma")))
    expected = ids(toy_endpoint.tokenizer, "system alpha user beta gamma assistant")
    assert encode_prompt(toy_endpoint, chat) == expected


def test_chat_without_template_is_refused_for_the_target() -> None:
    plain = endpoint(word_level_toy(chat=False))
    chat = ChatInput((ChatTurn("user", "alpha"),))
    with pytest.raises(PromptFormatError):
        encode_prompt(plain, chat)
    with pytest.raises(InvalidArgumentError, match=r"^chat: .*no chat template"):
        encode_target_prompt(plain, chat)


def test_fim_is_psm_with_the_models_tokens(toy_endpoint: Any) -> None:
    tokenizer = toy_endpoint.tokenizer
    fim = toy_endpoint.fim
    got = encode_prompt(toy_endpoint, FimInput(prefix="alpha beta", suffix="gamma"))
    assert got == [
        BOS,
        fim.prefix,
        *ids(tokenizer, "alpha beta"),
        fim.suffix,
        *ids(tokenizer, "gamma"),
        fim.middle,
    ]


def test_fim_without_fim_tokens() -> None:
    plain = endpoint(word_level_toy(), advertise_fim=False)
    prompt = FimInput(prefix="alpha beta", suffix="gamma")
    assert encode_prompt(plain, prompt) == [
        BOS,
        *ids(plain.tokenizer, "alpha beta"),
    ]  # a drafter: prefix only
    with pytest.raises(InvalidArgumentError, match=r"^fim: .*no fill-in-the-middle tokens"):
        encode_target_prompt(plain, prompt)


def test_prompt_must_leave_room_in_the_context() -> None:
    small = endpoint(word_level_toy(), max_context_tokens=4)
    assert len(encode_target_prompt(small, TextInput("alpha beta"))) == 3
    with pytest.raises(
        InvalidArgumentError, match=r"^prompt: is 4 tokens long; the target's context window is 4"
    ):
        encode_target_prompt(small, TextInput("alpha beta gamma"))


def test_text_token_ids_drop_only_a_final_eos() -> None:
    assert text_token_ids([5, 6, EOS], frozenset({EOS}), ignore_eos=False) == [5, 6]
    assert text_token_ids([5, 6, EOS], frozenset({EOS}), ignore_eos=True) == [5, 6, EOS]
    assert text_token_ids([5, 6], frozenset({EOS}), ignore_eos=False) == [5, 6]


def _byte_level_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(["def hello(): return 42", "  indented\n\tcode"], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend)  # type: ignore[no-untyped-call]


@pytest.mark.parametrize("text", ["héllo wörld 😀 中文 ok", "  leading spaces\n\tand tabs", "😀😀", "a"])
@pytest.mark.parametrize("chunk", [1, 2, 3])
def test_incremental_detokenization_holds_back_incomplete_characters(text: str, chunk: int) -> None:
    tokenizer = _byte_level_tokenizer()
    token_ids = tokenizer(text)["input_ids"]
    assert len(token_ids) > len(text) // 3  # multi-byte characters span several byte tokens
    detokenizer = IncrementalDetokenizer(tokenizer)
    deltas = [detokenizer.add(token_ids[i : i + chunk]) for i in range(0, len(token_ids), chunk)]
    deltas.append(detokenizer.finish())
    assert all("\ufffd" not in delta for delta in deltas)
    assert "".join(deltas) == decode_output(tokenizer, token_ids) == text


def test_incremental_detokenization_of_word_tokens(toy_endpoint: Any) -> None:
    tokenizer = toy_endpoint.tokenizer
    token_ids = ids(tokenizer, "alpha beta gamma end")
    detokenizer = IncrementalDetokenizer(tokenizer)
    deltas = [detokenizer.add([t]) for t in token_ids] + [detokenizer.finish()]
    assert "".join(deltas) == decode_output(tokenizer, token_ids)
