"""Same-vocabulary detection compares tokenizers, not sizes; padding is no difference."""

from __future__ import annotations

import json
from typing import Any

from tokenizers import AddedToken, Tokenizer

from coordinator.vocab.canonical import CanonicalVocab
from coordinator.vocab.identity import compare_vocabularies
from tests.support.toy_tokenizers import byte_level_toy
from tests.unit.vocab.conftest import NamedVocabs


def _edited(tokenizer: Any, edit: Any) -> CanonicalVocab:
    config = json.loads(tokenizer.to_str())
    edit(config)
    return CanonicalVocab.from_tokenizer(Tokenizer.from_str(json.dumps(config)))


def test_identical_tokenizers_are_the_same(toy_vocabs: NamedVocabs) -> None:
    again = CanonicalVocab.from_tokenizer(byte_level_toy())
    match = compare_vocabularies(toy_vocabs["byte_level"], again)
    assert match.same
    assert match.reason == "identical tokenizers"
    assert match.shared_size == again.size


def test_padding_rows_and_placeholder_tokens_are_padding_only(toy_vocabs: NamedVocabs) -> None:
    base = toy_vocabs["byte_level"]
    rows = compare_vocabularies(base, base, first_rows=base.size + 128, second_rows=base.size)
    assert rows.same
    assert "logit rows" in rows.reason
    padded = byte_level_toy()
    size = padded.get_vocab_size()
    padded.add_tokens([AddedToken(f"[PAD{size + i}]", special=False) for i in range(5)])
    padded.add_special_tokens([AddedToken("<|extra_0|>", special=True)])
    for first, second in (
        (base, CanonicalVocab.from_tokenizer(padded)),
        (CanonicalVocab.from_tokenizer(padded), base),
    ):
        match = compare_vocabularies(first, second)
        assert match.same, match.reason
        assert match.shared_size == size
        assert "placeholder ids" in match.reason


def test_an_extra_real_token_makes_vocabularies_different(toy_vocabs: NamedVocabs) -> None:
    extended = byte_level_toy()
    extended.add_tokens([AddedToken("<tool_call>", special=False)])
    match = compare_vocabularies(toy_vocabs["byte_level"], CanonicalVocab.from_tokenizer(extended))
    assert not match.same
    assert "<tool_call>" in match.reason


def test_other_schemes_pieces_merges_and_flags_differ(toy_vocabs: NamedVocabs) -> None:
    base = toy_vocabs["byte_level"]
    tokenizer = base.tokenizer
    assert "pre-tokenizers differ" in compare_vocabularies(base, toy_vocabs["sentencepiece"]).reason

    def swap_merges(config: dict[str, Any]) -> None:
        merges = config["model"]["merges"]
        merges[-1], merges[-2] = merges[-2], merges[-1]

    assert "merges differ" in compare_vocabularies(base, _edited(tokenizer, swap_merges)).reason

    def swap_ids(config: dict[str, Any]) -> None:
        vocab = config["model"]["vocab"]
        first, second = (next(p for p, i in vocab.items() if i == wanted) for wanted in (300, 301))
        vocab[first], vocab[second] = 301, 300

    assert "token 300" in compare_vocabularies(base, _edited(tokenizer, swap_ids)).reason

    def lstrip_special(config: dict[str, Any]) -> None:
        config["added_tokens"][0]["lstrip"] = True

    assert "added with other flags" in compare_vocabularies(base, _edited(tokenizer, lstrip_special)).reason

    def no_fallback(config: dict[str, Any]) -> None:
        config["model"]["dropout"] = 0.5

    assert "model options differ" in compare_vocabularies(base, _edited(tokenizer, no_fallback)).reason
