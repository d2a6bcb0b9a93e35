"""Real vocabulary pairs: intersection coverage, the end-to-end decode check, same-vocabulary detection,
and SLEM-style re-tokenization from one vocabulary to another."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from coordinator.vocab.canonical import CanonicalVocab, TokenKind
from coordinator.vocab.identity import compare_vocabularies
from coordinator.vocab.intersection import TokenDecodes, build_intersection, check_intersection_decodes
from coordinator.vocab.retokenize import (
    draft_continuation,
    encode_after,
    resync_drafter,
    retokenize_continuation,
)
from tests.integration.vocab_texts import TEXT

pytestmark = pytest.mark.real_model

COVERAGE_VOCABS = ("smollm2", "qwen2.5", "gemma-3", "gpt2", "llama-spm", "llama-bpe", "starcoder")
# Tokens with identical canonical bytes (specials excluded), per unordered pair: the intersection's size.
SHARED_TOKENS: dict[frozenset[str], int] = {
    frozenset(pair): count
    for pair, count in {
        ("smollm2", "qwen2.5"): 39234,
        ("smollm2", "gemma-3"): 46145,
        ("smollm2", "gpt2"): 36960,
        ("smollm2", "llama-spm"): 18709,
        ("smollm2", "llama-bpe"): 39310,
        ("smollm2", "starcoder"): 20602,
        ("qwen2.5", "gemma-3"): 95968,
        ("qwen2.5", "gpt2"): 42256,
        ("qwen2.5", "llama-spm"): 26342,
        ("qwen2.5", "llama-bpe"): 109566,
        ("qwen2.5", "starcoder"): 37926,
        ("gemma-3", "gpt2"): 45537,
        ("gemma-3", "llama-spm"): 30646,
        ("gemma-3", "llama-bpe"): 86434,
        ("gemma-3", "starcoder"): 39491,
        ("gpt2", "llama-spm"): 18207,
        ("gpt2", "llama-bpe"): 43209,
        ("gpt2", "starcoder"): 19482,
        ("llama-spm", "llama-bpe"): 26599,
        ("llama-spm", "starcoder"): 18278,
        ("llama-bpe", "starcoder"): 37825,
    }.items()
}
UNORDERED_PAIRS = list(itertools.combinations(COVERAGE_VOCABS, 2))


@pytest.mark.parametrize(("first", "second"), UNORDERED_PAIRS, ids=["->".join(p) for p in UNORDERED_PAIRS])
def test_intersection_coverage_and_every_mapped_token_decodes_identically(
    canonical_vocab: Callable[[str], CanonicalVocab],
    vocab_decodes: Callable[[str], TokenDecodes],
    first: str,
    second: str,
) -> None:
    expected = SHARED_TOKENS[frozenset((first, second))]
    for drafter_name, target_name in ((first, second), (second, first)):
        drafter, target = canonical_vocab(drafter_name), canonical_vocab(target_name)
        intersection = build_intersection(drafter, target)
        target_ids = intersection.mapped_pairs()[1]
        assert intersection.mapped_count == expected
        assert len(set(target_ids.tolist())) == expected  # injective
        assert intersection.coverage == expected / drafter.size
        check = check_intersection_decodes(
            drafter, target, intersection, vocab_decodes(drafter_name), vocab_decodes(target_name)
        )
        assert check.ok, check.mismatches[:5]
        assert check.in_context_checked == expected
        assert check.alone_checked > 0.95 * expected


def test_smollm2_to_qwen_matches_the_reference_count_once_specials_are_excluded(
    canonical_vocab: Callable[[str], CanonicalVocab], vocab_tokenizer: Callable[[str], Any]
) -> None:
    # transformers maps 39,237 SmolLM2 tokens onto Qwen2.5 by string: the 39,234 text tokens here plus
    # the three special tokens both spell alike, which are never mapped here.
    smollm2, qwen = canonical_vocab("smollm2"), canonical_vocab("qwen2.5")
    assert build_intersection(smollm2, qwen).mapped_count == 39234
    shared_specials = {
        vocab_tokenizer("smollm2").convert_ids_to_tokens(i)
        for i in range(smollm2.size)
        if smollm2.kinds[i] == TokenKind.SPECIAL
    } & {
        vocab_tokenizer("qwen2.5").convert_ids_to_tokens(i)
        for i in range(qwen.size)
        if qwen.kinds[i] == TokenKind.SPECIAL
    }
    assert shared_specials == {"<|endoftext|>", "<|im_start|>", "<|im_end|>"}


def test_padding_rows_keep_qwen_on_the_same_vocabulary(
    canonical_vocab: Callable[[str], CanonicalVocab], vocab_tokenizer: Callable[[str], Any]
) -> None:
    qwen = canonical_vocab("qwen2.5")
    reloaded = CanonicalVocab.from_tokenizer(Tokenizer.from_str(qwen.tokenizer.to_str()))
    identical = compare_vocabularies(qwen, reloaded)
    assert (identical.same, identical.reason) == (True, "identical tokenizers")
    # Qwen2.5-7B's head has 152,064 rows, 0.5B's 151,936: one tokenizer.
    rows = compare_vocabularies(qwen, reloaded, first_rows=152064, second_rows=151936)
    assert rows.same
    assert rows.reason == "same vocabulary, padding only: logit rows 152064 vs 151936"
    assert rows.shared_size == 151936


@pytest.mark.slow
def test_placeholder_tail_of_the_gguf_qwen_tokenizer_is_padding(
    canonical_vocab: Callable[[str], CanonicalVocab],
) -> None:
    # The GGUF tokenizer pads Qwen2.5's 151,665 tokens to 151,936 with '[PAD151665]'... pieces; the
    # original tokenizer stops at 151,665. Drop the placeholders and compare.
    qwen = canonical_vocab("qwen2.5")
    config = json.loads(qwen.tokenizer.to_str())
    vocab = config["model"]["vocab"]
    config["model"]["vocab"] = {piece: i for piece, i in vocab.items() if not piece.startswith("[PAD")}
    unpadded = CanonicalVocab.from_tokenizer(Tokenizer.from_str(json.dumps(config)))
    assert unpadded.size == 151665
    match = compare_vocabularies(unpadded, qwen)
    assert match.same, match.reason
    assert match.shared_size == 151665
    assert "placeholder ids above 151665" in match.reason


@pytest.mark.parametrize(
    ("first", "second", "reason"),
    [
        ("smollm2", "starcoder", "token 1 is '<|im_start|>' vs '<fim_prefix>'"),
        ("gpt2", "qwen2.5", "normalizers differ"),
        ("qwen2", "qwen2.5", "token 151646 is '[PAD151646]' vs '<|object_ref_start|>'"),
        ("smollm2", "gpt2", "token 0 is '<|endoftext|>' vs '!'"),
        ("llama-spm", "phi-3", "normalizers differ"),
        ("smollm2", "qwen2.5", "normalizers differ"),
        ("llama-spm", "gemma-3", "normalizers differ"),
    ],
)
def test_different_tokenizers_are_told_apart(
    canonical_vocab: Callable[[str], CanonicalVocab], first: str, second: str, reason: str
) -> None:
    match = compare_vocabularies(canonical_vocab(first), canonical_vocab(second))
    assert not match.same
    assert match.reason == f"different tokenizers: {reason}"


def test_smollm2_and_starcoder_differ_beyond_their_special_tokens(
    canonical_vocab: Callable[[str], CanonicalVocab],
) -> None:
    # Both are 49,152-token byte-level BPEs with GPT-2 pre-tokenization, yet share only 20,602 pieces.
    smollm2, starcoder = canonical_vocab("smollm2"), canonical_vocab("starcoder")
    same_piece = sum(
        1
        for i in range(smollm2.size)
        if smollm2.tokenizer.id_to_token(i) == starcoder.tokenizer.id_to_token(i)
    )
    assert same_piece < 1000
    assert build_intersection(smollm2, starcoder).mapped_count == 20602


SLEM_PAIRS = [
    ("smollm2", "qwen2.5"),
    ("gemma-3", "qwen2.5"),
    ("qwen2.5", "gemma-3"),
    ("llama-spm", "smollm2"),
]


@pytest.mark.parametrize(("drafter_name", "target_name"), SLEM_PAIRS, ids=["->".join(p) for p in SLEM_PAIRS])
@settings(max_examples=20, deadline=None, derandomize=True)
@given(text=TEXT, data=st.data())
def test_slem_round_keeps_both_views_on_the_committed_text(
    canonical_vocab: Callable[[str], CanonicalVocab],
    drafter_name: str,
    target_name: str,
    text: str,
    data: st.DataObject,
) -> None:
    drafter, target = canonical_vocab(drafter_name), canonical_vocab(target_name)
    prompt = "def f(x):\n"
    target_prompt, drafter_prompt = target.encode_plain(prompt), drafter.encode_plain(prompt)
    full = text.encode()
    # The target has committed some prefix of the text, in its own (natural) tokens.
    target_all = list(encode_after(target, target.bytes_of(target_prompt), full).tokens)
    committed = target_all[: data.draw(st.integers(0, len(target_all)), label="committed target tokens")]
    committed_text = target.bytes_of(committed)
    # The drafter's view holds some earlier text plus drafts that may disagree.
    seen = text[: data.draw(st.integers(0, len(text)), label="drafter view characters")]
    stale = seen.encode() + b" stale draft"
    view = list(encode_after(drafter, drafter.bytes_of(drafter_prompt), stale).tokens)
    resync = resync_drafter(drafter, view, committed_text)
    synced = view[: resync.keep] + list(resync.append)
    assert drafter.bytes_of(synced) + resync.pending == committed_text
    # The drafter drafts the rest of the text, possibly stopping inside a character.
    rest_tokens = encode_after(
        drafter, drafter.bytes_of(drafter_prompt + synced), full[len(drafter.bytes_of(synced)) :]
    )
    drafts = rest_tokens.tokens[: data.draw(st.integers(0, len(rest_tokens.tokens)), label="draft tokens")]
    continuation = draft_continuation(resync.pending, drafter.bytes_of(drafts))
    if continuation is None:
        return  # drafts that contradict the pending bytes are not verified at all
    candidates = retokenize_continuation(target, target_prompt + committed, continuation)
    assert target.bytes_of(candidates.tokens) == continuation[: candidates.consumed]
    assert candidates.dropped == b""
    spelled = committed_text + continuation[: candidates.consumed]
    assert full.startswith(spelled)
    assert target.decode_text(target_prompt + committed + list(candidates.tokens)).endswith(
        spelled.decode("utf-8", errors="replace").lstrip(" ")
    )
    if candidates.consumed == len(continuation) == len(full) - len(committed_text):
        # The whole text was drafted: target tokens spell it to the last byte.
        assert target.bytes_of(committed + list(candidates.tokens)) == full


@pytest.mark.parametrize(
    ("name", "committed_text", "new_text"),
    [
        ("qwen2.5", "x = '", "cafe\u0301'"),  # NFC composes e + U+0301 when encoding
        ("llama-spm", "a =", "  b\u2581c"),  # a literal '▁' encodes as a space
        ("phi-3", "x", " <|user|>y"),  # an added token's text inside the draft
        ("gemma-3", "def f():", "\n\n\t<table>"),  # added newline/tab/HTML tokens
    ],
)
def test_non_injective_encodings_are_spelled_exactly(
    canonical_vocab: Callable[[str], CanonicalVocab], name: str, committed_text: str, new_text: str
) -> None:
    vocab = canonical_vocab(name)
    committed = vocab.encode_plain(committed_text)
    result = retokenize_continuation(vocab, committed, new_text.encode())
    assert result.consumed == len(new_text.encode())
    assert vocab.bytes_of(result.tokens) == new_text.encode()
    assert all(vocab.is_text_token(t) for t in result.tokens)
